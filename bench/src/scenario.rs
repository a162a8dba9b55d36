//! The scenarios: each turns its flags into a [`Plan`] of members, rooms and pacing, runs it,
//! and wraps what was measured in a [`Report`].

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Result};
use serde_json::json;

use crate::churn;
use crate::cli::{ChurnArgs, Common, FanoutArgs, IdleArgs, Pacing, RoomsArgs, SlowArgs};
use crate::report::Report;
use crate::traffic::{Engine, MemberPlan, Pace, Plan};

/// Names for this run: users `b<tag><kind><n>`, rooms `b<tag>r<n>`. Short enough for IRC's
/// nickname limits, and lower case because chatd lower-cases names.
pub struct Names {
    tag: String,
}

impl Names {
    pub fn new(common: &Common) -> Names {
        let tag = common.tag.clone().unwrap_or_else(|| {
            // Changes every 100 ms: consecutive runs against one server get fresh rooms.
            let tenths = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() / 100);
            base36((tenths % (36 * 36 * 36)) as u64, 3)
        });
        Names {
            tag: tag.to_ascii_lowercase(),
        }
    }

    pub fn user(&self, kind: char, n: usize) -> String {
        format!("b{}{kind}{n}", self.tag)
    }

    pub fn room(&self, n: usize) -> String {
        format!("b{}r{n}", self.tag)
    }
}

fn base36(mut n: u64, width: usize) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = digits[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(out).expect("base36 digits are ASCII")
}

fn pace(rate: f64, window: u64) -> Result<Pace> {
    ensure!(rate >= 0.0, "--rate must not be negative");
    if rate > 0.0 {
        Ok(Pace::Rate(rate))
    } else {
        ensure!(window > 0, "--window must be at least 1");
        Ok(Pace::Window(window))
    }
}

fn pacing_json(pacing: &Pacing) -> serde_json::Value {
    if pacing.rate > 0.0 {
        json!({ "rate_per_sender": pacing.rate })
    } else {
        json!({ "rate_per_sender": "flat out", "window": pacing.window })
    }
}

/// One room; members `0..senders` send, `stalled` of the others stop reading.
fn one_room(
    common: &Common,
    members: usize,
    senders: usize,
    stalled: usize,
) -> (Vec<String>, Vec<MemberPlan>) {
    let names = Names::new(common);
    let room = common.proto.room_name(&names.room(0));
    // Stalled members are spread through the room rather than bunched at one end, so
    // a server that fans out in join order meets them throughout its loop.
    let listeners = members - senders;
    let stalls = |n: usize| {
        n >= senders && stalled > 0 && {
            let k = n - senders;
            (k * stalled) / listeners != ((k + 1) * stalled) / listeners
        }
    };
    let plan = (0..members)
        .map(|n| MemberPlan {
            name: names.user('m', n),
            room: Some(0),
            sends: n < senders,
            stalls: stalls(n),
        })
        .collect();
    (vec![room], plan)
}

pub fn fanout(common: &Common, args: &FanoutArgs) -> Result<Report> {
    ensure!(args.members >= 2, "--members must be at least 2");
    ensure!(
        args.senders >= 1 && args.senders < args.members,
        "--senders must be between 1 and members - 1 (someone has to listen)"
    );
    let (rooms, members) = one_room(common, args.members, args.senders, 0);
    let mut params = json!({ "members": args.members, "senders": args.senders });
    merge(&mut params, pacing_json(&args.pacing));
    let plan = Plan {
        rooms,
        members,
        pace: pace(args.pacing.rate, args.pacing.window)?,
        stalled_rcvbuf: 0,
    };
    run_traffic(common, "fanout", params, plan)
}

pub fn rooms(common: &Common, args: &RoomsArgs) -> Result<Report> {
    ensure!(args.members >= 2, "--members must be at least 2");
    ensure!(args.rooms >= 1, "--rooms must be at least 1");
    let names = Names::new(common);
    let rooms = (0..args.rooms)
        .map(|r| common.proto.room_name(&names.room(r)))
        .collect();
    let members = (0..args.rooms * args.members)
        .map(|n| MemberPlan {
            name: names.user('m', n),
            room: Some(n / args.members),
            sends: true,
            stalls: false,
        })
        .collect();
    let params = json!({
        "rooms": args.rooms,
        "members_per_room": args.members,
        "rate_per_member": if args.rate > 0.0 { json!(args.rate) } else { json!(format!("flat out, window {}", args.window)) },
        "offered_deliveries_per_s": args.rate * (args.rooms * args.members * (args.members - 1)) as f64,
    });
    let plan = Plan {
        rooms,
        members,
        pace: pace(args.rate, args.window)?,
        stalled_rcvbuf: 0,
    };
    run_traffic(common, "rooms", params, plan)
}

pub fn idle(common: &Common, args: &IdleArgs) -> Result<Report> {
    ensure!(args.members >= 2, "--members must be at least 2");
    ensure!(args.rate > 0.0, "--rate must be positive");
    let names = Names::new(common);
    // The conversation connects first, so a server that refuses sessions beyond its
    // capacity refuses idle ones and the conversation still runs.
    let mut members: Vec<MemberPlan> = (0..args.members)
        .map(|n| MemberPlan {
            name: names.user('m', n),
            room: Some(0),
            sends: true,
            stalls: false,
        })
        .collect();
    members.extend((0..args.sessions).map(|n| MemberPlan {
        name: names.user('i', n),
        room: None,
        sends: false,
        stalls: false,
    }));
    let params = json!({
        "idle_sessions": args.sessions,
        "conversation_members": args.members,
        "rate_per_member": args.rate,
    });
    let plan = Plan {
        rooms: vec![common.proto.room_name(&names.room(0))],
        members,
        pace: Pace::Rate(args.rate),
        stalled_rcvbuf: 0,
    };
    run_traffic(common, "idle", params, plan)
}

pub fn slow(common: &Common, args: &SlowArgs) -> Result<Report> {
    ensure!(
        args.senders >= 1 && args.senders + 1 < args.members,
        "--senders must leave at least two listeners"
    );
    ensure!(
        (0.0..1.0).contains(&args.stalled),
        "--stalled must be in 0..1"
    );
    let listeners = args.members - args.senders;
    let stalled = if args.no_stall {
        0
    } else {
        // At least one listener keeps reading: it is the senders' witness.
        ((listeners as f64 * args.stalled).round() as usize).min(listeners - 1)
    };
    let (rooms, members) = one_room(common, args.members, args.senders, stalled);
    let mut params = json!({
        "members": args.members,
        "senders": args.senders,
        "stalled_members": stalled,
        "stalled_rcvbuf": args.stalled_rcvbuf,
    });
    merge(&mut params, pacing_json(&args.pacing));
    let plan = Plan {
        rooms,
        members,
        pace: pace(args.pacing.rate, args.pacing.window)?,
        stalled_rcvbuf: args.stalled_rcvbuf,
    };
    run_traffic(common, "slow", params, plan)
}

pub fn churn(common: &Common, args: &ChurnArgs) -> Result<Report> {
    ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    churn::run(common, args, &Names::new(common))
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    if let (Some(into), serde_json::Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

fn run_traffic(
    common: &Common,
    scenario: &'static str,
    params: serde_json::Value,
    plan: Plan,
) -> Result<Report> {
    let load_average = crate::procfs::load_average();
    let mut params = params;
    merge(
        &mut params,
        json!({
            "start_order": format!("{:?}", common.start_order).to_lowercase(),
            "neighbour_threads": common.neighbour_threads,
        }),
    );
    let epoch = Instant::now();
    let mut engine = Engine::new(common, plan, epoch)?;
    let setup = engine.setup();
    let sessions = setup.sessions_ready;
    let (traffic, stalled) = if sessions == 0 {
        (None, None)
    } else {
        let (traffic, stalled) = engine.run();
        (Some(traffic), stalled)
    };
    let deliveries = traffic.as_ref().map_or(0, |t| t.deliveries);
    let (server, bench) = engine.finish(sessions, deliveries);
    Ok(Report {
        scenario,
        proto: common.proto,
        addr: common.addr_list(),
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        load_average_at_start: load_average,
        params,
        setup: Some(setup),
        traffic,
        stalled,
        churn: None,
        server,
        bench,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_is_fixed_width() {
        assert_eq!(base36(0, 3), "000");
        assert_eq!(base36(36 * 36 * 36 - 1, 3), "zzz");
    }
}
