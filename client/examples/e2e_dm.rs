//! A small end-to-end encrypted chat with one peer, in a terminal.
//!
//! ```text
//! cargo run -p chatd-client --example e2e_dm -- <host:port> <user> <device> <peer> [password]
//! ```
//!
//! The device's private key is kept in `chatd-e2e-<user>-<device>.key` in the current
//! directory (created on first run, mode 0600). Type a line to send it encrypted; `/verify`
//! prints the fingerprints of your devices and the peer's, to compare with the peer out of
//! band (read aloud, or side by side); `/quit` leaves. Incoming DMs are decrypted, or shown
//! with the reason they could not be.

use std::io::{BufRead, Write};
use std::sync::mpsc;
use std::time::Duration;

use chatd_client::e2e::{is_envelope, Identity};
use chatd_client::{Client, Config, Event};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(4..=5).contains(&args.len()) {
        eprintln!("usage: e2e_dm <host:port> <user> <device> <peer> [password]");
        std::process::exit(2);
    }
    let (server, user, device, peer) = (&args[0], &args[1], &args[2], &args[3]);
    if let Err(e) = run(server, user, device, peer, args.get(4)) {
        eprintln!("e2e_dm: {e}");
        std::process::exit(1);
    }
}

fn run(
    server: &str,
    user: &str,
    device: &str,
    peer: &str,
    password: Option<&String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let identity = load_or_create(user, device)?;
    let mut config = Config::new(server, user).device(device);
    if let Some(password) = password {
        config = config.password(password.as_str());
    }
    let mut client = Client::connect(config)?;
    println!("published: {}", client.publish_key(&identity)?);
    println!("this device: {}", identity.fingerprint());

    // stdin on its own thread: the client is driven from this one.
    let (lines, typed) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        match typed.try_recv() {
            Ok(line) if line == "/quit" => break,
            Ok(line) if line == "/verify" => verify(&mut client, &identity, peer)?,
            Ok(line) if line.is_empty() => {}
            Ok(line) => match client.dm_encrypted(&identity, peer, &line) {
                Ok(sent) => println!("(sent, seq {})", sent.seq),
                Err(e) => println!("(not sent: {e})"),
            },
            Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        match client.next_event(Duration::from_millis(100))? {
            Some(Event::Message(m)) if is_envelope(&m.body) => {
                match client.decrypt(&identity, &m) {
                    Ok(text) => println!("{}: {text}", m.sender),
                    Err(e) => println!("{}: [cannot decrypt: {e}]", m.sender),
                }
            }
            Some(Event::Message(m)) => println!("{} (not encrypted): {}", m.sender, m.body),
            Some(Event::DeviceChanged { user, device, key }) => {
                let what = if key.is_some() { "added" } else { "revoked" };
                println!("* {user} {what} device {device}: /verify before trusting it");
            }
            Some(_) | None => {}
        }
        std::io::stdout().flush()?;
    }
    client.quit();
    Ok(())
}

/// `/verify`: every device of both users with its fingerprint.
fn verify(client: &mut Client, identity: &Identity, peer: &str) -> Result<(), chatd_client::Error> {
    for user in [identity.user.as_str(), peer] {
        let list = client.device_keys(user)?;
        let account = if list.account {
            "has a password"
        } else {
            "has NO password: anyone can add devices to it"
        };
        println!("{user} ({account}):");
        for device in &list.devices {
            let mark = if device.key == identity.public_bytes() {
                " (this device)"
            } else {
                ""
            };
            println!("  {:<12} {}{mark}", device.device, device.fingerprint());
        }
    }
    Ok(())
}

fn load_or_create(user: &str, device: &str) -> std::io::Result<Identity> {
    let path = format!("chatd-e2e-{user}-{device}.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let bytes: Vec<u8> = (0..text.trim().len() / 2)
            .filter_map(|i| u8::from_str_radix(text.trim().get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        if let Ok(secret) = <[u8; 32]>::try_from(bytes) {
            return Ok(Identity::from_secret_bytes(user, device, secret));
        }
        return Err(std::io::Error::other(format!("{path} is not a key")));
    }
    let identity = Identity::generate(user, device);
    let hex: String = identity
        .secret_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(&path)?.write_all(hex.as_bytes())?;
    Ok(identity)
}
