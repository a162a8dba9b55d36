//! A tiny in-process chatd stand-in for the bench's own tests: LOGIN, JOIN and SEND with
//! fan-out to every member, plus faults (a dropped or a repeated delivery) so the tests can
//! check that the bench counts lost and duplicated deliveries.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// Faults to inject into the fan-out.
#[derive(Clone, Copy, Default)]
pub struct Faults {
    /// The n-th message published is not delivered to its first non-sending member.
    pub drop_message: Option<u64>,
    /// The n-th message published is delivered twice to every member.
    pub repeat_message: Option<u64>,
}

#[derive(Default)]
struct Rooms {
    members: HashMap<String, Vec<(String, TcpStream)>>,
    published: u64,
}

/// Starts the server on 127.0.0.1:0; it lives until the test process exits.
pub fn start(faults: Faults) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let rooms = Arc::new(Mutex::new(Rooms::default()));
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let rooms = Arc::clone(&rooms);
            thread::spawn(move || serve(stream, &rooms, faults));
        }
    });
    addr
}

fn serve(stream: TcpStream, rooms: &Mutex<Rooms>, faults: Faults) {
    let mut out = stream.try_clone().expect("clone stream");
    let _ = out.write_all(b"HELLO chatd 0.1 :fake\n");
    let mut user = String::new();
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let mut words = line.splitn(3, ' ');
        let reply = match (words.next(), words.next(), words.next()) {
            (Some("LOGIN"), Some(name), _) => {
                user = name.to_string();
                format!("OK LOGIN {name}\n")
            }
            (Some("JOIN"), Some(room), _) => {
                let mut rooms = rooms.lock().unwrap();
                let members = rooms.members.entry(room.to_string()).or_default();
                members.push((user.clone(), out.try_clone().expect("clone stream")));
                format!("OK JOIN {room} seq=0 epoch=1 members={}\n", members.len())
            }
            (Some("SEND"), Some(room), Some(body)) => {
                let mut rooms = rooms.lock().unwrap();
                rooms.published += 1;
                let n = rooms.published;
                let line =
                    format!("MSG {room} {n} id-{n} 2026-11-28T00:00:00.000Z {user} {body}\n");
                let mut dropped = false;
                for (member, stream) in rooms.members.get_mut(room).into_iter().flatten() {
                    if faults.drop_message == Some(n) && !dropped && *member != user {
                        dropped = true;
                        continue;
                    }
                    let copies = if faults.repeat_message == Some(n) {
                        2
                    } else {
                        1
                    };
                    for _ in 0..copies {
                        let _ = stream.write_all(line.as_bytes());
                    }
                }
                format!("OK SEND {room} {n} id-{n}\n")
            }
            (Some("QUIT"), _, _) => {
                let _ = out.write_all(b"BYE quit :bye\n");
                return;
            }
            _ => "ERR unknown-command :?\n".to_string(),
        };
        let _ = out.write_all(reply.as_bytes());
    }
}
