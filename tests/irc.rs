//! The IRC listener (`--irc-listen`), scripted over real sockets: registration with and
//! without CAP and SASL, rooms shared with line-protocol users, DMs, history on JOIN and via
//! CHATHISTORY, long bodies split, error numerics, a slow IRC consumer, hostile input.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{Client, TestServer, DEADLINE};

/// A server with an IRC listener on 127.0.0.1:0.
fn irc_server(configure: impl FnOnce(&mut chatd::Config)) -> TestServer {
    TestServer::with(|config| {
        config.irc_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        configure(config);
    })
}

fn irc_addr(server: &TestServer) -> SocketAddr {
    server.handle().irc_addr().expect("the IRC listener is on")
}

/// An IRC client over a support `Client` (which gives every read a deadline).
struct Irc {
    conn: Client,
}

/// Most lines skipped while waiting for one: a bound on every wait loop.
const MAX_SKIPPED: usize = 2_000;

impl Irc {
    fn connect(addr: SocketAddr) -> Irc {
        Irc {
            conn: Client::connect_raw(addr),
        }
    }

    /// Connects and registers as `nick` without CAP, reading through the MOTD.
    fn register(addr: SocketAddr, nick: &str) -> Irc {
        let mut irc = Irc::connect(addr);
        irc.send(&format!("NICK {nick}"));
        irc.send(&format!("USER {nick} 0 * :{nick} the tester"));
        irc.expect_containing(" 001 ");
        irc.expect_containing(" 376 ");
        irc
    }

    /// Registers after `CAP REQ` for `caps`.
    fn register_with_caps(addr: SocketAddr, nick: &str, caps: &str) -> Irc {
        let mut irc = Irc::connect(addr);
        irc.send("CAP LS 302");
        irc.send(&format!("NICK {nick}"));
        irc.send(&format!("USER {nick} 0 * :{nick}"));
        irc.send(&format!("CAP REQ :{caps}"));
        irc.expect_containing(&format!("CAP * ACK :{caps}"));
        irc.send("CAP END");
        irc.expect_containing(" 376 ");
        irc
    }

    fn send(&mut self, line: &str) {
        self.conn.send(line);
    }

    fn line(&mut self) -> String {
        let line = self.conn.next_line();
        match line.strip_suffix('\r') {
            Some(line) => line.to_owned(),
            None => self
                .conn
                .fail(&format!("an IRC line without \\r\\n: {line:?}")),
        }
    }

    /// Reads until a line contains `part`; returns it.
    fn expect_containing(&mut self, part: &str) -> String {
        for _ in 0..MAX_SKIPPED {
            let line = self.line();
            if line.contains(part) {
                return line;
            }
        }
        self.conn.fail(&format!("no line containing {part:?}"))
    }

    /// The next line must contain `part`.
    fn expect_next(&mut self, part: &str) -> String {
        let line = self.line();
        if !line.contains(part) {
            self.conn.fail(&format!(
                "expected a line containing {part:?}, got {line:?}"
            ));
        }
        line
    }

    /// A PING round trip: everything queued before it has been read after this.
    fn sync(&mut self, token: &str) {
        self.send(&format!("PING {token}"));
        self.expect_containing(&format!("PONG chatd :{token}"));
    }

    fn expect_closed_with(&mut self, part: &str) {
        let lines = self.conn.read_until_closed();
        let last = lines
            .last()
            .map(|l| l.trim_end().to_owned())
            .unwrap_or_default();
        if !(last.starts_with("ERROR :Closing link") && last.contains(part)) {
            self.conn.fail(&format!(
                "expected a last ERROR with {part:?}, got {lines:?}"
            ));
        }
    }
}

/// A line-protocol client reading until a line starts with `prefix`, skipping others.
fn line_until(client: &mut Client, prefix: &str) -> String {
    for _ in 0..MAX_SKIPPED {
        let line = client.next_line();
        if line.starts_with(prefix) {
            return line;
        }
    }
    client.fail(&format!("no line starting with {prefix:?}"))
}

/// The next `MSG <room>` from `sender`, skipping everything else.
fn msg_from(client: &mut Client, room: &str, sender: &str) -> String {
    for _ in 0..MAX_SKIPPED {
        let line = line_until(client, &format!("MSG {room} "));
        if line.split(' ').nth(5) == Some(sender) {
            return line;
        }
    }
    client.fail(&format!("no MSG in {room} from {sender}"))
}

/// Registration without CAP: the welcome burst, an honest ISUPPORT, the MOTD.
#[test]
fn registration_without_cap_welcomes_with_isupport_and_motd() {
    let server = irc_server(|_| {});
    let mut irc = Irc::connect(irc_addr(&server));
    irc.send("NICK Alice");
    irc.send("USER alice 0 * :Alice A");
    // Names are lower-cased like every chatd name: the nick is the account.
    assert_eq!(irc.line(), ":chatd 001 alice :Welcome to chatd, alice");
    irc.expect_next(":chatd 002 alice ");
    irc.expect_next(":chatd 003 alice ");
    irc.expect_next(":chatd 004 alice chatd ");
    let isupport = irc.expect_next(":chatd 005 alice ");
    for token in [
        "CHANTYPES=#",
        "CASEMAPPING=ascii",
        "NICKLEN=32",
        "CHANNELLEN=33",
    ] {
        assert!(isupport.contains(token), "{token} in {isupport}");
    }
    irc.expect_next(" 251 alice :There are ");
    irc.expect_containing(" 375 alice ");
    irc.expect_containing(" 376 alice ");
    irc.sync("t1");
}

/// CAP LS 302 / REQ / END and SASL PLAIN log in to an account; a wrong password is 904.
#[test]
fn cap_negotiation_and_sasl_plain_log_in_to_an_account() {
    let server = irc_server(|_| {});
    // The account, registered over the line protocol.
    let mut line = server.connect();
    line.send("LOGIN dana password=hunter22");
    line_until(&mut line, "OK LOGIN dana");

    let mut irc = Irc::connect(irc_addr(&server));
    irc.send("CAP LS 302");
    let ls = irc.expect_containing("CAP * LS :");
    for cap in [
        "sasl=PLAIN",
        "server-time",
        "message-tags",
        "echo-message",
        "labeled-response",
        "batch",
        "draft/chathistory",
        "account-tag",
        "away-notify",
    ] {
        assert!(ls.contains(cap), "{cap} offered in {ls}");
    }
    irc.send("NICK somebody");
    irc.send("USER x 0 * :x");
    irc.send("CAP REQ :sasl bogus-cap");
    irc.expect_containing("CAP * NAK :sasl bogus-cap");
    irc.send("CAP REQ :sasl");
    irc.expect_containing("CAP * ACK :sasl");
    irc.send("AUTHENTICATE PLAIN");
    irc.expect_next("AUTHENTICATE +");
    // base64("\0dana\0wrong")
    irc.send("AUTHENTICATE AGRhbmEAd3Jvbmc=");
    irc.expect_next(" 904 ");
    irc.send("AUTHENTICATE PLAIN");
    irc.expect_next("AUTHENTICATE +");
    // base64("\0dana\0hunter22")
    irc.send("AUTHENTICATE AGRhbmEAaHVudGVyMjI=");
    irc.expect_next(" 900 somebody dana!dana@chatd dana :");
    irc.expect_next(" 903 ");
    irc.send("CAP END");
    // The account is the nick.
    irc.expect_next(":chatd 001 dana ");
    irc.expect_containing(" 376 dana ");
}

/// PASS carries the password without SASL; a wrong one is 464 and a closed link.
#[test]
fn pass_logs_in_and_a_wrong_password_is_464() {
    let server = irc_server(|_| {});
    let mut line = server.connect();
    line.send("LOGIN erin password=letmein1");
    line_until(&mut line, "OK LOGIN erin");

    let mut irc = Irc::connect(irc_addr(&server));
    irc.send("PASS letmein1");
    irc.send("NICK erin");
    irc.send("USER erin 0 * :Erin");
    irc.expect_containing(":chatd 001 erin ");

    let mut bad = Irc::connect(irc_addr(&server));
    bad.send("PASS nope");
    bad.send("NICK erin");
    bad.send("USER erin 0 * :Erin");
    bad.expect_containing(" 464 erin :");
    bad.expect_closed_with("login-refused");

    // PASS for a name without an account is ignored, not turned into one: IRC clients send a
    // configured server password everywhere.
    let mut free = Irc::connect(irc_addr(&server));
    free.send("PASS bouncerpass");
    free.send("NICK freebie");
    free.send("USER f 0 * :f");
    free.expect_containing(":chatd 001 freebie ");
    let mut again = server.connect();
    again.send("LOGIN freebie");
    line_until(&mut again, "OK LOGIN freebie");
}

/// --require-account: an IRC nick without an account cannot register.
#[test]
fn require_account_applies_to_irc() {
    let server = irc_server(|config| config.require_account = true);
    let mut irc = Irc::connect(irc_addr(&server));
    irc.send("NICK nobody");
    irc.send("USER nobody 0 * :x");
    irc.expect_containing(" 464 nobody :");
    irc.expect_closed_with("login-refused");
}

/// An IRC user and a line-protocol user in one room see each other's joins, messages,
/// parts and presence.
#[test]
fn irc_and_line_protocol_users_share_a_room() {
    let server = irc_server(|_| {});
    let mut bob = server.login("bob");
    bob.join("general");
    let mut alice = Irc::register(irc_addr(&server), "alice");
    alice.send("JOIN #general");
    alice.expect_next(":alice!alice@chatd JOIN #general");
    let names = alice.expect_next(" 353 alice = #general :");
    assert!(names.contains("alice") && names.contains("bob"), "{names}");
    alice.expect_next(" 366 alice #general :");
    line_until(&mut bob, "JOINED general alice");

    alice.send("PRIVMSG #general :hello from irc");
    let msg = msg_from(&mut bob, "general", "alice");
    assert!(msg.ends_with(" alice hello from irc"), "{msg}");
    bob.send("SEND general hello from nc");
    line_until(&mut bob, "OK SEND");
    alice.expect_containing(":bob!bob@chatd PRIVMSG #general :hello from nc");

    // /me is a CTCP ACTION on IRC and a "/me " body in chatd, both ways.
    alice.send("PRIVMSG #general :\u{1}ACTION waves\u{1}");
    let msg = msg_from(&mut bob, "general", "alice");
    assert!(msg.ends_with(" alice /me waves"), "{msg}");
    bob.send("SEND general /me nods");
    alice.expect_containing(":bob!bob@chatd PRIVMSG #general :\u{1}ACTION nods\u{1}");

    bob.send("LEAVE general");
    alice.expect_containing(":bob!bob@chatd PART #general");
    bob.send("JOIN general");
    alice.expect_containing(":bob!bob@chatd JOIN #general");
    alice.send("PART #general");
    alice.expect_containing(":alice!alice@chatd PART #general");
    line_until(&mut bob, "LEFT general alice");
    alice.send("JOIN #general");
    line_until(&mut bob, "JOINED general alice");
    alice.send("QUIT :bye");
    alice.expect_closed_with("quit");
    line_until(&mut bob, "PRESENCE alice offline");
}

/// One person on both protocols at once: each connection is a device, and a message sent
/// from one shows on the other.
#[test]
fn one_person_on_both_protocols_is_two_devices() {
    let server = irc_server(|_| {});
    let mut line = server.login("frank");
    line.join("both");
    let mut irc = Irc::register(irc_addr(&server), "frank");
    // The room the user is already in is joined for the IRC client at registration.
    irc.expect_containing(":frank!frank@chatd JOIN #both");
    irc.expect_containing(" 366 frank #both ");
    line.send("SEND both from the terminal");
    irc.expect_containing(":frank!frank@chatd PRIVMSG #both :from the terminal");
    irc.send("PRIVMSG #both :from irc");
    let msg = line_until(&mut line, "MSG both 2 ");
    assert!(msg.ends_with(" frank from irc"), "{msg}");
}

/// PRIVMSG to a nick is a DM, both ways.
#[test]
fn privmsg_to_a_nick_is_a_direct_message() {
    let server = irc_server(|_| {});
    let mut bob = server.login("bob");
    let mut alice = Irc::register(irc_addr(&server), "alice");
    alice.send("PRIVMSG bob :psst");
    let msg = line_until(&mut bob, "MSG dm:alice:bob");
    assert!(msg.ends_with(" alice psst"), "{msg}");
    bob.send("DM alice hi back");
    alice.expect_containing(":bob!bob@chatd PRIVMSG alice :hi back");
    alice.send("PRIVMSG nobody :hello?");
    alice.expect_containing(" 401 alice nobody :");
}

/// A client without chathistory gets recent history on JOIN, in a batch with server-time if
/// it took those; CHATHISTORY LATEST/BEFORE/AFTER/AROUND page by msgid.
#[test]
fn history_on_join_and_through_chathistory() {
    let server = irc_server(|_| {});
    let mut bob = server.login("bob");
    bob.join("hist");
    let mut ids = Vec::new();
    for i in 1..=5 {
        ids.push(bob.say("hist", &format!("old {i}")).id);
    }
    // Plain client: the replay is PRIVMSGs after the JOIN.
    let mut plain = Irc::register(irc_addr(&server), "plain");
    plain.send("JOIN #hist");
    plain.expect_containing(" 366 plain #hist ");
    for i in 1..=5 {
        plain.expect_next(&format!(":bob!bob@chatd PRIVMSG #hist :old {i}"));
    }
    // batch + server-time: one chathistory batch, each message timed.
    let mut batched = Irc::register_with_caps(irc_addr(&server), "batched", "batch server-time");
    batched.send("JOIN #hist");
    batched.expect_containing(" 366 batched #hist ");
    let start = batched.expect_next(":chatd BATCH +");
    let id = start
        .split_whitespace()
        .nth(2)
        .unwrap()
        .trim_start_matches('+')
        .to_owned();
    assert!(start.ends_with("chathistory #hist"), "{start}");
    for i in 1..=5 {
        let line = batched.expect_next(&format!("PRIVMSG #hist :old {i}"));
        assert!(line.starts_with(&format!("@batch={id};time=20")), "{line}");
    }
    batched.expect_next(&format!(":chatd BATCH -{id}"));

    // chathistory: no replay on JOIN; the client asks.
    let caps = "batch server-time message-tags draft/chathistory";
    let mut modern = Irc::register_with_caps(irc_addr(&server), "modern", caps);
    modern.send("JOIN #hist");
    modern.expect_containing(" 366 modern #hist ");
    modern.send("CHATHISTORY LATEST #hist * 2");
    modern.expect_next("BATCH +");
    let line = modern.expect_next("PRIVMSG #hist :old 4");
    assert!(line.contains(&format!("msgid={}", ids[3])), "{line}");
    assert!(line.contains("account=bob"), "{line}");
    modern.expect_next("PRIVMSG #hist :old 5");
    modern.expect_next("BATCH -");
    modern.send(&format!("CHATHISTORY BEFORE #hist msgid={} 10", ids[2]));
    modern.expect_next("BATCH +");
    modern.expect_next("PRIVMSG #hist :old 1");
    modern.expect_next("PRIVMSG #hist :old 2");
    modern.expect_next("BATCH -");
    modern.send(&format!("CHATHISTORY AFTER #hist msgid={} 2", ids[1]));
    modern.expect_next("BATCH +");
    modern.expect_next("PRIVMSG #hist :old 3");
    modern.expect_next("PRIVMSG #hist :old 4");
    modern.expect_next("BATCH -");
    modern.send(&format!("CHATHISTORY AROUND #hist msgid={} 3", ids[2]));
    modern.expect_next("BATCH +");
    modern.expect_next("PRIVMSG #hist :old 2");
    modern.expect_next("PRIVMSG #hist :old 3");
    modern.expect_next("PRIVMSG #hist :old 4");
    modern.expect_next("BATCH -");
    modern.send("CHATHISTORY LATEST #nothere * 10");
    modern.expect_next("FAIL CHATHISTORY INVALID_TARGET");
}

/// A body longer than an IRC line is split at UTF-8 boundaries into several PRIVMSGs, each
/// carrying what an IRC client could send in one 512-byte line, losing nothing.
#[test]
fn long_bodies_are_split_never_truncated() {
    let server = irc_server(|_| {});
    let mut bob = server.login("bob");
    bob.join("long");
    let mut alice = Irc::register(irc_addr(&server), "alice");
    alice.send("JOIN #long");
    alice.expect_containing(" 366 alice #long ");
    let body: String = (0..1300).map(|i| ['a', 'é', '€', '𝄞'][i % 4]).collect();
    assert!(body.len() > 3000);
    bob.send(&format!("SEND long {body}"));
    let prefix = ":bob!bob@chatd PRIVMSG #long :";
    let mut got = String::new();
    while got.len() < body.len() {
        let line = alice.expect_next(prefix);
        // As a client could have sent it: without the prefix and the colon, plus `\r\n`.
        let sent_as = line.len() - ":bob!bob@chatd ".len() - 1 + 2;
        assert!(sent_as <= 512, "{sent_as} bytes without the prefix");
        got.push_str(&line[prefix.len()..]);
    }
    assert_eq!(got, body);
}

/// labeled-response and echo-message: the echo of a labelled PRIVMSG carries the label; a
/// command with no reply gets ACK; a multi-line reply is a labelled batch.
#[test]
fn labeled_response_and_echo_message() {
    let server = irc_server(|_| {});
    let caps = "echo-message labeled-response batch message-tags";
    let mut irc = Irc::register_with_caps(irc_addr(&server), "lab", caps);
    irc.send("@label=j1 JOIN #lab");
    let start = irc.expect_next("@label=j1 :chatd BATCH +");
    assert!(start.ends_with(" labeled-response"), "{start}");
    irc.expect_next("JOIN #lab");
    irc.expect_containing(":chatd BATCH -");
    irc.send("@label=m1 PRIVMSG #lab :echoed");
    let echo = irc.expect_next(":lab!lab@chatd PRIVMSG #lab :echoed");
    assert!(echo.starts_with("@label=m1;"), "{echo}");
    assert!(echo.contains("msgid="), "{echo}");
    irc.send("@label=p1 PONG :x");
    irc.expect_next("@label=p1 :chatd ACK");
    irc.send("@label=t1 TOPIC #lab");
    irc.expect_next("@label=t1 :chatd 331 lab #lab :");
}

/// Typing (+typing client tag) and presence (away-notify) reach IRC clients that asked.
#[test]
fn typing_and_presence_reach_irc() {
    let server = irc_server(|_| {});
    let mut irc = Irc::register_with_caps(irc_addr(&server), "tina", "message-tags away-notify");
    irc.send("JOIN #sig");
    irc.expect_containing(" 366 tina #sig ");
    let mut bob = server.login("bob");
    bob.join("sig");
    irc.expect_containing(":bob!bob@chatd JOIN #sig");
    bob.send("TYPING sig");
    irc.expect_containing("@+typing=active :bob!bob@chatd TAGMSG #sig");
    irc.send("@+typing=active TAGMSG #sig");
    line_until(&mut bob, "TYPING sig tina");
    drop(bob);
    irc.expect_containing(":bob!bob@chatd AWAY :offline since ");
}

/// Invite-only rooms: MODE +i, INVITE and KICK map onto PRIVATE, INVITE and KICK.
#[test]
fn invite_only_rooms_through_mode_invite_and_kick() {
    let server = irc_server(|_| {});
    let mut owner = Irc::register(irc_addr(&server), "owner");
    owner.send("JOIN #club");
    owner.expect_containing(" 366 owner #club ");
    owner.send("MODE #club +i");
    owner.expect_next(":owner!owner@chatd MODE #club +i");
    owner.send("MODE #club");
    owner.expect_next(" 324 owner #club +i");
    let mut guest = Irc::register(irc_addr(&server), "guest");
    guest.send("MODE #club +i");
    guest.expect_next(" 403 guest #club ");
    owner.send("INVITE guest #club");
    owner.expect_next(" 341 owner guest #club");
    guest.expect_containing(":owner!owner@chatd INVITE guest #club");
    guest.send("JOIN #club");
    guest.expect_next(":guest!guest@chatd JOIN #club");
    guest.send("MODE #club -i");
    guest.expect_containing(" 482 guest #club ");
    owner.send("KICK #club guest");
    owner.expect_containing(":owner!owner@chatd KICK #club guest");
    guest.expect_containing(":owner!owner@chatd KICK #club guest");
}

/// WHOIS and WHO, with last_seen for someone offline; LIST shows public rooms.
#[test]
fn whois_who_and_list() {
    let server = irc_server(|_| {});
    let mut gone = server.login("gone");
    gone.join("lobby");
    gone.send("QUIT");
    gone.read_until_closed();
    let mut irc = Irc::register(irc_addr(&server), "asker");
    irc.send("JOIN #lobby");
    irc.expect_containing(" 366 asker #lobby ");
    irc.send("WHOIS gone");
    irc.expect_next(" 311 asker gone gone chatd * :gone");
    irc.expect_next(" 312 asker gone chatd ");
    irc.expect_next(" 319 asker gone :#lobby");
    irc.expect_next(" 301 asker gone :offline; last seen 20");
    irc.expect_next(" 318 asker gone ");
    irc.send("WHOIS nobody");
    irc.expect_next(" 401 asker nobody ");
    irc.expect_next(" 318 asker nobody ");
    irc.send("WHO #lobby");
    irc.expect_next(" 352 asker #lobby asker chatd chatd asker H :0 asker");
    irc.expect_next(" 352 asker #lobby gone chatd chatd gone G :0 gone");
    irc.expect_next(" 315 asker #lobby ");
    irc.send("LIST");
    irc.expect_next(" 321 asker ");
    irc.expect_next(" 322 asker #lobby 2 :");
    irc.expect_next(" 323 asker ");
}

/// AWAY, LUSERS and WHOWAS.
#[test]
fn away_lusers_and_whowas() {
    let server = irc_server(|_| {});
    let mut bar = Irc::register(irc_addr(&server), "bar");
    let mut qux = Irc::register_with_caps(irc_addr(&server), "qux", "away-notify");
    for irc in [&mut bar, &mut qux] {
        irc.send("JOIN #w");
        irc.expect_containing(" 366 ");
    }
    bar.send("AWAY :out to lunch");
    bar.expect_containing(" 306 bar :");
    qux.send("PRIVMSG bar :there?");
    qux.expect_next(" 301 qux bar :out to lunch");
    qux.send("USERHOST bar");
    qux.expect_next(" 302 qux :bar=-bar@chatd");
    qux.send("WHOIS bar");
    qux.expect_containing(" 301 qux bar :out to lunch");
    bar.send("AWAY");
    bar.expect_containing(" 305 bar :");
    qux.send("LUSERS");
    qux.expect_containing(" 251 qux :There are 2 users");
    qux.expect_next(" 254 qux ");
    qux.expect_next(" 255 qux :I have 2 clients");
    bar.send("QUIT");
    bar.expect_closed_with("quit");
    // Offline once the session has ended (presence-notify tells when).
    qux.expect_containing(":bar!bar@chatd AWAY :offline since ");
    qux.send("WHOWAS bar");
    qux.expect_next(" 314 qux bar bar chatd * :bar");
    qux.expect_next(" 312 qux bar chatd :20");
    qux.expect_next(" 369 qux bar ");
    qux.send("WHOWAS nobody");
    qux.expect_next(" 406 qux nobody ");
    qux.expect_next(" 369 qux nobody ");
}

/// The error numerics: 451 421 461 403 404 401 411 412 432 433 417, and control characters.
#[test]
fn error_numerics() {
    let server = irc_server(|_| {});
    let mut irc = Irc::connect(irc_addr(&server));
    irc.send("JOIN #x");
    irc.expect_next(":chatd 451 * JOIN :");
    irc.send("NICK bad[nick]");
    irc.expect_next(":chatd 432 * bad[nick] :");
    irc.send("NICK");
    irc.expect_next(":chatd 431 * :");
    irc.send("USER x");
    irc.expect_next(":chatd 461 * USER :");
    irc.send("NICK errs");
    irc.send("USER errs 0 * :e");
    irc.expect_containing(" 376 errs ");
    irc.send("FROBNICATE");
    irc.expect_next(":chatd 421 errs FROBNICATE :");
    irc.send("JOIN");
    irc.expect_next(":chatd 461 errs JOIN :");
    irc.send("JOIN general");
    irc.expect_next(":chatd 403 errs general :");
    irc.send("PRIVMSG #nowhere :hi");
    irc.expect_next(":chatd 403 errs #nowhere :");
    let mut bob = server.login("bob");
    bob.join("elsewhere");
    irc.send("PRIVMSG #elsewhere :hi");
    irc.expect_next(":chatd 404 errs #elsewhere :");
    irc.send("PRIVMSG nobody :hi");
    irc.expect_next(":chatd 401 errs nobody :");
    irc.send("PRIVMSG");
    irc.expect_next(":chatd 411 errs :");
    irc.send("PRIVMSG bob");
    irc.expect_next(":chatd 412 errs :");
    irc.send("NICK other");
    irc.expect_next(":chatd 433 errs other :");
    irc.send("PART #elsewhere");
    irc.expect_next(":chatd 442 errs #elsewhere :");
    irc.send("PRIVMSG bob :bell\u{7}");
    irc.expect_next(":chatd 404 errs bob :");
    irc.send("PRIVMSG bob :\u{1}VERSION\u{1}");
    irc.expect_next(":chatd 404 errs bob :");
    irc.send(&format!("PRIVMSG bob :{}", "x".repeat(9000)));
    irc.expect_next(":chatd 417 errs :");
    // mIRC formatting is stripped, not refused.
    irc.send("PRIVMSG bob :\u{2}bold\u{2} \u{3}4red");
    let msg = line_until(&mut bob, "MSG dm:bob:errs");
    assert!(msg.ends_with(" errs bold red"), "{msg}");
    irc.sync("still-here");
}

/// Hostile input: invalid UTF-8, NULs, only tags, too many parameters, a long tag block:
/// each gets a numeric or nothing, never a crash or a hang.
#[test]
fn hostile_input_gets_numerics_not_crashes() {
    let server = irc_server(|_| {});
    let mut irc = Irc::register(irc_addr(&server), "hostile");
    irc.conn.send_raw(b"PRIVMSG #x :\xff\xfe\r\n");
    irc.expect_next(":chatd FAIL PRIVMSG INVALID_UTF8 :lines must be UTF-8");
    irc.conn.send_raw(b"@a=b\r\n");
    irc.expect_next(" 421 hostile * :no command");
    irc.send(&format!("X{}", " p".repeat(20)));
    irc.expect_next(" 417 hostile :too many");
    irc.send(&format!("@{} PING x", "k=v;".repeat(1100)));
    irc.expect_next(" 417 hostile :too many");
    irc.conn.send_raw(b"PRIVMSG hostile :nul\0byte\r\n");
    irc.expect_next(" 404 hostile hostile :");
    irc.conn.send_raw(b"\r\n   \r\n");
    irc.sync("alive");
    // Still serving others.
    let mut other = Irc::register(irc_addr(&server), "other");
    other.sync("fine");
}

/// The line listener's limits apply: the login timeout, the line timeout and flooding each
/// close an IRC connection with ERROR :Closing link and the reason.
#[test]
fn the_listener_limits_apply_to_irc() {
    let server = irc_server(|config| {
        config.login_timeout = Duration::from_millis(300);
        config.line_timeout = Duration::from_millis(300);
        config.rate_limit = Some(chatd::config::RateLimit {
            burst: 5,
            per_second: 1.0,
            flood_refusals: 3,
        });
    });
    let mut idle = Irc::connect(irc_addr(&server));
    idle.expect_closed_with("login-timeout");
    let mut loris = Irc::register(irc_addr(&server), "loris");
    loris.conn.send_raw(b"PRIVMSG loris :never fini");
    loris.expect_closed_with("line-timeout");
    let mut flood = Irc::register(irc_addr(&server), "flood");
    for i in 0..40 {
        flood.conn.send_raw(format!("PING {i}\r\n").as_bytes());
    }
    flood.expect_closed_with("flooding");
}

/// Per-address and capacity refusals at the door speak IRC too.
#[test]
fn refusals_at_the_door_are_irc_errors() {
    let server = irc_server(|config| {
        config.max_per_ip = Some(1);
        config.per_ip_loopback = true;
    });
    let _first = Irc::register(irc_addr(&server), "first");
    let mut second = Irc::connect(irc_addr(&server));
    second.expect_closed_with("too-many-connections");
}

/// A slow IRC consumer is disconnected with ERROR and never stalls the room.
#[test]
fn a_slow_irc_consumer_is_cut_off_without_stalling_the_room() {
    use socket2::{Domain, Socket, Type};
    let server = irc_server(|config| {
        config.channel_capacity = 16;
        config.write_timeout = Duration::from_secs(60);
    });
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&irc_addr(&server).into()).unwrap();
    let stream: std::net::TcpStream = socket.into();
    let mut slow = Irc {
        conn: Client::connect_raw_stream(stream),
    };
    slow.send("NICK slow");
    slow.send("USER slow 0 * :s");
    slow.expect_containing(" 376 slow ");
    slow.send("JOIN #flood");
    slow.expect_containing(" 366 slow #flood ");
    let mut sender = server.login("sender");
    sender.join("flood");
    let mut watcher = server.login("watcher");
    watcher.join("flood");
    let filler = "x".repeat(3900);
    let started = Instant::now();
    let mut cut = false;
    for seq in 1..=20_000u32 {
        sender.send(&format!("SEND flood {seq:05} {filler}"));
        line_until(&mut sender, "OK SEND");
        line_until(&mut sender, "MSG flood");
        let got = line_until(&mut watcher, "MSG flood");
        assert!(got.contains(&format!(" {seq:05} ")), "watcher in order");
        if seq % 32 == 0 && sender.stats()["slow_consumers"] >= 1 {
            cut = true;
            break;
        }
        assert!(started.elapsed() < DEADLINE * 12, "the flood took too long");
    }
    assert!(cut, "the IRC client was never cut off");
    slow.expect_closed_with("slow-consumer");
}

/// IRC connections are written through too, each in its own encoding, including to every
/// member of a quiet room far bigger than a busy room's budget: every IRC member gets
/// every message once, in order, and the IRC poster's own message is not echoed to it (that
/// is its encoder's per-connection state, which every writer of the connection shares).
#[test]
fn a_quiet_big_room_reaches_every_irc_member_once_in_order() {
    const MEMBERS: usize = 150; // far above write_through::BUDGET
    const MESSAGES: usize = 4;
    let server = irc_server(|_| {});
    let addr = irc_addr(&server);
    let mut members: Vec<Irc> = (0..MEMBERS)
        .map(|n| {
            let nick = format!("q{n}");
            let mut irc = Irc::register(addr, &nick);
            irc.send("JOIN #quietbig");
            irc.expect_containing(&format!(":{nick}!{nick}@chatd JOIN #quietbig"));
            irc
        })
        .collect();
    let mut poster = server.login("poster");
    poster.join("quietbig");
    for n in 1..=MESSAGES {
        poster.say("quietbig", &format!("hello-{n}"));
        // Longer than write_through::QUIET: the room is quiet again for the next post.
        std::thread::sleep(Duration::from_millis(5));
    }
    // One IRC member posts too: everyone else gets it, it does not (no echo-message).
    members[0].send("PRIVMSG #quietbig :from-q0");
    for (n, member) in members.iter_mut().enumerate() {
        for m in 1..=MESSAGES {
            member.expect_containing(&format!(
                ":poster!poster@chatd PRIVMSG #quietbig :hello-{m}"
            ));
        }
        if n > 0 {
            member.expect_containing(":q0!q0@chatd PRIVMSG #quietbig :from-q0");
            member.sync("end");
        } else {
            // Nothing between the last message and the PONG: no echo of its own post.
            member.send("PING end");
            member.expect_next("PONG chatd :end");
        }
    }
}
