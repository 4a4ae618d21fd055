//! The engine's inbox: one bounded lane per source, served fairly, with
//! critical events ahead of every backlog.
//!
//! A single shared queue lets one noisy source fill it, and then an event
//! from any other source waits behind the whole backlog. Here each source
//! (each sender created by [`Inbox::lane`]) has a lane of its own with its
//! own capacity; a full lane makes only its own sender wait. The engine
//! takes batches round-robin across lanes, a few events per lane per
//! round, so a quiet source's event is in the next batch whatever another
//! source queued. Critical events skip the queue: they go to an urgent
//! line (bounded too), served in small turns of their own, so the path
//! from a critical event to its popup stays short during a storm, even when
//! the storm and the critical event come from the same source. While both
//! wait, urgent turns and lane turns alternate: a storm of critical events
//! cannot starve the other sources either.
//!
//! Order within a lane is kept for everything but critical events, and a
//! source's saved state never overtakes an event queued before it, so a
//! state committed after the events before it still covers only events the
//! engine has seen: a state waits at the head of its lane until every
//! urgent event queued before it has been taken. Saved states are never
//! refused (see [`LaneSender::try_send`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::event::{Inbound, Severity};

/// How many critical events may wait in the urgent line; beyond that
/// they queue in their lane like any other (a storm of criticals must not
/// grow memory without bound).
const URGENT_CAP: usize = 4096;

/// Events taken from one lane per round.
const PER_ROUND: usize = 16;

/// Critical events per urgent turn at most: a turn is committed as one
/// transaction, and a small one commits in a few milliseconds.
const URGENT_TURN: usize = 64;

/// The receiving side, owned by the engine loop.
#[derive(Clone, Default)]
pub struct Inbox {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").field("queued", &self.len()).finish()
    }
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the engine when something arrives.
    arrived: Notify,
}

#[derive(Default)]
struct State {
    lanes: Vec<Lane>,
    /// Critical events, each with its number in the order they came.
    urgent: VecDeque<(u64, Inbound)>,
    /// The number of the last critical event queued.
    urgent_seq: u64,
    /// Whether the last turn was an urgent one (turns alternate while
    /// both kinds wait).
    served_urgent: bool,
    /// Where the next round starts, so no lane is always first.
    cursor: usize,
    next_id: u64,
    closed: bool,
}

struct Lane {
    id: u64,
    name: Arc<str>,
    /// Each entry with the number of the last critical event queued before
    /// it (what a saved state must wait for).
    queue: VecDeque<(u64, Inbound)>,
    capacity: usize,
    senders: usize,
    /// Wakes this lane's senders waiting for room.
    room: Arc<Notify>,
}

/// A sender into one lane. Clones share the lane.
pub struct LaneSender {
    shared: Arc<Shared>,
    id: u64,
    room: Arc<Notify>,
}

impl std::fmt::Debug for LaneSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneSender").field("lane", &self.id).finish()
    }
}

/// Why an event was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the lane is full")]
    Full(Box<Inbound>),
    #[error("the engine has stopped")]
    Closed(Box<Inbound>),
}

impl SendError {
    pub fn into_inner(self) -> Inbound {
        match self {
            SendError::Full(m) | SendError::Closed(m) => *m,
        }
    }
}

fn is_urgent(m: &Inbound) -> bool {
    matches!(m, Inbound::Event(e) if e.severity == Severity::Critical)
}

impl Inbox {
    pub fn new() -> Inbox {
        Inbox::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }

    /// A new lane named `name` (for logs) holding up to `capacity` events.
    pub fn lane(&self, name: &str, capacity: usize) -> LaneSender {
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        let room = Arc::new(Notify::new());
        st.lanes.push(Lane {
            id,
            name: Arc::from(name),
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            senders: 1,
            room: room.clone(),
        });
        LaneSender { shared: self.shared.clone(), id, room }
    }

    /// Events waiting, in all lanes.
    pub fn len(&self) -> usize {
        let st = self.lock();
        st.urgent.len() + st.lanes.iter().map(|l| l.queue.len()).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lanes with something queued, by name, with their lengths.
    pub fn backlog(&self) -> Vec<(Arc<str>, usize)> {
        let st = self.lock();
        st.lanes.iter().filter(|l| !l.queue.is_empty()).map(|l| (l.name.clone(), l.queue.len())).collect()
    }

    /// Moves up to `max` events into `out`, as one turn: either urgent
    /// events alone (at most [`URGENT_TURN`]) or a round-robin batch from
    /// the lanes, alternating while both wait. Returns how many were taken
    /// (0 if none).
    ///
    /// Critical events make turns of their own because a turn is committed
    /// as one transaction, and a full batch of storm events (hundreds of
    /// alerts, notifications and audit rows) takes tens of milliseconds to
    /// route and commit. Riding alone, a critical event waits for at most
    /// the turn already under way, not for the batch it would have shared.
    pub fn take(&self, out: &mut Vec<Inbound>, max: usize) -> usize {
        let mut st = self.lock();
        let lanes_waiting = st.lanes.iter().any(|l| !l.queue.is_empty());
        // Urgent first, unless the last turn was urgent and lanes wait.
        let lanes_turn = st.served_urgent && lanes_waiting;
        if !st.urgent.is_empty() && !lanes_turn {
            return take_urgent(&mut st, out, max);
        }
        let n = take_lanes(&mut st, out, max);
        if n == 0 && !st.urgent.is_empty() {
            // The lanes hold only states waiting for urgent events.
            return take_urgent(&mut st, out, max);
        }
        st.served_urgent = false;
        n
    }

    /// Waits until something is queued, then takes up to `max` of it.
    pub async fn recv_many(&self, out: &mut Vec<Inbound>, max: usize) -> usize {
        self.recv_with(|| self.take(out, max)).await
    }

    /// Waits until a critical event is queued, then takes an urgent turn
    /// (lanes are left alone): what the engine takes while its ordinary
    /// turn waits for the store.
    pub async fn recv_urgent(&self, out: &mut Vec<Inbound>, max: usize) -> usize {
        self.recv_with(|| {
            let mut st = self.lock();
            if st.urgent.is_empty() { 0 } else { take_urgent(&mut st, out, max) }
        })
        .await
    }

    /// Calls `take` until it takes something, waiting for arrivals between
    /// calls (registered before each call, so none is missed).
    ///
    /// Each call spends a unit of the task's cooperative budget first, as
    /// tokio's own channels do. A storm keeps the inbox always ready: without
    /// this, the engine loop's `select!` would take the inbox turn after turn
    /// and never give the runtime back, and once the budget that its channels
    /// spend ran out, they (the shutdown control among them) would never be
    /// ready again until the storm ended. Spending it before taking means a
    /// turn given up takes nothing, so nothing is left half-taken.
    async fn recv_with(&self, mut take: impl FnMut() -> usize) -> usize {
        tokio::task::coop::consume_budget().await;
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let n = take();
            if n > 0 {
                return n;
            }
            arrived.await;
        }
    }

    /// Refuses further events and wakes every waiting sender.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        for l in &st.lanes {
            l.room.notify_waiters();
        }
    }
}

fn take_urgent(st: &mut State, out: &mut Vec<Inbound>, max: usize) -> usize {
    st.served_urgent = true;
    let n = st.urgent.len().min(max).min(URGENT_TURN);
    out.extend(st.urgent.drain(..n).map(|(_, m)| m));
    n
}

/// A round-robin batch from the lanes.
fn take_lanes(st: &mut State, out: &mut Vec<Inbound>, max: usize) -> usize {
    let start = out.len();
    // Urgent events numbered below this one have all been taken.
    let oldest_urgent = st.urgent.front().map_or(u64::MAX, |(n, _)| *n);
    let lanes = st.lanes.len();
    if lanes > 0 {
        let mut idle_rounds = 0;
        while out.len() - start < max && idle_rounds < lanes {
            let i = st.cursor % lanes;
            st.cursor = (i + 1) % lanes;
            let lane = &mut st.lanes[i];
            let before = lane.queue.len();
            let limit = before.min(PER_ROUND).min(max - (out.len() - start));
            // A state stays until the urgent events queued before it are taken.
            let n = lane
                .queue
                .iter()
                .take(limit)
                .position(|(mark, m)| matches!(m, Inbound::State { .. }) && *mark >= oldest_urgent)
                .unwrap_or(limit);
            out.extend(lane.queue.drain(..n).map(|(_, m)| m));
            if n > 0 {
                idle_rounds = 0;
                if before >= lane.capacity {
                    lane.room.notify_waiters();
                }
            } else {
                idle_rounds += 1;
            }
        }
    }
    // Lanes whose senders are all gone and that have been emptied are done.
    st.lanes.retain(|l| l.senders > 0 || !l.queue.is_empty());
    if !st.lanes.is_empty() {
        st.cursor %= st.lanes.len();
    }
    out.len() - start
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves plain queues behind, still
    // consistent: keep going rather than take the daemon down.
    shared.state.lock().unwrap_or_else(|e| e.into_inner())
}

impl LaneSender {
    /// Queues `m` if there is room.
    pub fn try_send(&self, m: Inbound) -> Result<(), SendError> {
        let mut st = lock(&self.shared);
        if st.closed {
            return Err(SendError::Closed(Box::new(m)));
        }
        if is_urgent(&m) && st.urgent.len() < URGENT_CAP {
            st.urgent_seq += 1;
            let n = st.urgent_seq;
            st.urgent.push_back((n, m));
        } else {
            let mark = st.urgent_seq;
            let Some(lane) = st.lanes.iter_mut().find(|l| l.id == self.id) else {
                return Err(SendError::Closed(Box::new(m)));
            };
            if let Inbound::State { source, .. } = &m {
                // A saved state is never refused. Under a storm the lane is
                // always full of events, and a source that cannot hand over
                // its position would, after a crash, resume from one long
                // out of date (or none). It replaces a state of the same
                // source queued right before it with no event between them
                // (not even an urgent one: the older state may be free to
                // go sooner), so states add at most one entry per run of
                // events and the lane stays bounded.
                match lane.queue.back_mut() {
                    Some((queued_mark, Inbound::State { source: queued, state }))
                        if queued == source && *queued_mark == mark =>
                    {
                        let Inbound::State { state: newer, .. } = m else { unreachable!("matched above") };
                        *state = newer;
                    }
                    _ => lane.queue.push_back((mark, m)),
                }
            } else if lane.queue.len() >= lane.capacity {
                return Err(SendError::Full(Box::new(m)));
            } else {
                lane.queue.push_back((mark, m));
            }
        }
        drop(st);
        self.shared.arrived.notify_one();
        Ok(())
    }

    /// Queues `m`, waiting for room in the lane.
    pub async fn send(&self, mut m: Inbound) -> Result<(), SendError> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_send(m) {
                Err(SendError::Full(back)) => m = *back,
                other => return other,
            }
            room.await;
        }
    }
}

impl Clone for LaneSender {
    fn clone(&self) -> Self {
        let mut st = lock(&self.shared);
        if let Some(l) = st.lanes.iter_mut().find(|l| l.id == self.id) {
            l.senders += 1;
        }
        LaneSender { shared: self.shared.clone(), id: self.id, room: self.room.clone() }
    }
}

impl Drop for LaneSender {
    fn drop(&mut self) {
        let mut st = lock(&self.shared);
        if let Some(l) = st.lanes.iter_mut().find(|l| l.id == self.id) {
            l.senders = l.senders.saturating_sub(1);
        }
        st.lanes.retain(|l| l.senders > 0 || !l.queue.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use chrono::{DateTime, Utc};

    fn ev(source: &str, sev: Severity, n: usize) -> Inbound {
        let t = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        Inbound::Event(Event::new(source, "h", sev, format!("{source} {n}"), t))
    }

    fn summary(m: &Inbound) -> String {
        match m {
            Inbound::Event(e) => e.summary.clone(),
            Inbound::State { source, state } => format!("state {source} {state}"),
        }
    }

    /// On a current-thread runtime, another task runs only when the one
    /// taking from the inbox yields: a storm that never lets the inbox go
    /// empty must not keep it from yielding (the daemon's shutdown control
    /// and timers wait on that).
    #[tokio::test(flavor = "current_thread")]
    async fn a_taker_of_an_inbox_that_never_empties_still_lets_other_tasks_run() {
        let inbox = Inbox::new();
        let storm = inbox.lane("storm", 1000);
        for i in 0..1000 {
            storm.try_send(ev("storm", Severity::Warning, i)).unwrap();
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        tokio::spawn(async move { tx.send(()).await });
        let mut out = Vec::new();
        let mut turns = 0;
        loop {
            tokio::select! {
                biased;
                _ = rx.recv() => break,
                _ = inbox.recv_many(&mut out, 1) => {
                    // The storm refills what was taken: the inbox never empties.
                    storm.try_send(out.pop().unwrap()).unwrap();
                    turns += 1;
                }
            }
            assert!(turns < 10_000, "the other task never ran in {turns} turns");
        }
        assert_eq!(inbox.len(), 1000, "nothing lost to a turn given up");
    }

    #[test]
    fn a_quiet_lane_is_served_in_the_next_batch_whatever_the_backlog() {
        let inbox = Inbox::new();
        let storm = inbox.lane("storm", 100_000);
        let quiet = inbox.lane("quiet", 10);
        for i in 0..50_000 {
            storm.try_send(ev("storm", Severity::Warning, i)).unwrap();
        }
        quiet.try_send(ev("quiet", Severity::Warning, 0)).unwrap();
        let mut out = Vec::new();
        inbox.take(&mut out, 256);
        assert_eq!(out.len(), 256);
        assert!(out.iter().any(|m| summary(m) == "quiet 0"), "the quiet lane's event is in the first batch");
        // The storm's own order is kept.
        let storm_order: Vec<String> = out.iter().map(summary).filter(|s| s.starts_with("storm")).take(3).collect();
        assert_eq!(storm_order, ["storm 0", "storm 1", "storm 2"]);
    }

    #[test]
    fn critical_events_go_first_even_from_the_storming_lane_but_states_keep_their_place() {
        let inbox = Inbox::new();
        let storm = inbox.lane("storm", 100_000);
        for i in 0..1000 {
            storm.try_send(ev("storm", Severity::Warning, i)).unwrap();
        }
        storm.try_send(Inbound::State { source: "storm".into(), state: "1000".into() }).unwrap();
        storm.try_send(ev("storm", Severity::Critical, 1000)).unwrap();
        let mut out = Vec::new();
        assert_eq!(inbox.take(&mut out, 10), 1, "a critical event makes a turn of its own");
        assert_eq!(summary(&out[0]), "storm 1000", "critical first");
        inbox.take(&mut out, 10);
        assert_eq!(summary(&out[1]), "storm 0", "then the backlog, in order");
        while inbox.take(&mut out, 256) > 0 {}
        assert_eq!(out.len(), 1002, "everything arrives once");
        assert_eq!(summary(out.last().unwrap()), "state storm 1000", "the state stays behind the events before it");
    }

    #[test]
    fn a_storm_of_critical_events_starves_neither_other_sources_nor_its_states() {
        let inbox = Inbox::new();
        let storm = inbox.lane("storm", 100_000);
        let quiet = inbox.lane("quiet", 10);
        for i in 0..3000 {
            storm.try_send(ev("storm", Severity::Critical, i)).unwrap();
        }
        storm.try_send(Inbound::State { source: "storm".into(), state: "3000".into() }).unwrap();
        for i in 3000..3100 {
            storm.try_send(ev("storm", Severity::Critical, i)).unwrap();
        }
        storm.try_send(Inbound::State { source: "storm".into(), state: "3100".into() }).unwrap();
        quiet.try_send(ev("quiet", Severity::Warning, 0)).unwrap();
        let mut turns: Vec<Vec<String>> = Vec::new();
        loop {
            let mut out = Vec::new();
            if inbox.take(&mut out, 512) == 0 {
                break;
            }
            turns.push(out.iter().map(summary).collect());
        }
        assert!(
            turns[0].iter().all(|s| s.starts_with("storm")) && turns[0].len() <= URGENT_TURN,
            "urgent first, small"
        );
        assert_eq!(turns[1], ["quiet 0"], "then the other sources, not after the whole storm");
        let flat: Vec<&String> = turns.iter().flatten().collect();
        assert_eq!(flat.len(), 3103, "everything once, each state too");
        let at = |s: &str| flat.iter().position(|x| *x == s).unwrap();
        assert!(at("state storm 3000") > at("storm 2999"), "the state waits for the events before it");
        assert!(
            at("state storm 3000") < at("storm 3099"),
            "but not for those after it: a newer state does not hold it"
        );
        assert!(at("state storm 3100") > at("storm 3099"));
    }

    #[test]
    fn a_full_lane_refuses_and_others_still_accept() {
        let inbox = Inbox::new();
        let a = inbox.lane("a", 2);
        let b = inbox.lane("b", 2);
        a.try_send(ev("a", Severity::Info, 0)).unwrap();
        a.try_send(ev("a", Severity::Info, 1)).unwrap();
        assert!(matches!(a.try_send(ev("a", Severity::Info, 2)), Err(SendError::Full(_))));
        b.try_send(ev("b", Severity::Info, 0)).unwrap();
        assert_eq!(inbox.len(), 3);
    }

    #[test]
    fn a_full_lane_still_takes_states_and_a_newer_state_replaces_one_right_before_it() {
        let inbox = Inbox::new();
        let a = inbox.lane("a", 2);
        a.try_send(ev("a", Severity::Info, 0)).unwrap();
        a.try_send(ev("a", Severity::Info, 1)).unwrap();
        let state = |s: &str| Inbound::State { source: "a".into(), state: s.into() };
        a.try_send(state("1")).expect("a state is taken even when the lane is full");
        a.try_send(state("2")).unwrap();
        assert!(matches!(a.try_send(ev("a", Severity::Info, 2)), Err(SendError::Full(_))), "events still wait");
        let mut out = Vec::new();
        inbox.take(&mut out, 10);
        assert_eq!(out.iter().map(summary).collect::<Vec<_>>(), ["a 0", "a 1", "state a 2"]);
    }

    #[test]
    fn a_lane_lives_until_its_senders_are_gone_and_it_is_empty() {
        let inbox = Inbox::new();
        let a = inbox.lane("a", 4);
        let a2 = a.clone();
        a.try_send(ev("a", Severity::Info, 0)).unwrap();
        drop(a);
        drop(a2);
        assert_eq!(inbox.backlog().len(), 1, "queued events outlive their senders");
        let mut out = Vec::new();
        assert_eq!(inbox.take(&mut out, 10), 1);
        assert!(inbox.backlog().is_empty());
        assert_eq!(inbox.lock().lanes.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_sender_resumes_when_the_engine_takes() {
        let inbox = Inbox::new();
        let a = inbox.lane("a", 1);
        a.try_send(ev("a", Severity::Info, 0)).unwrap();
        let sender = tokio::spawn(async move { a.send(ev("a", Severity::Info, 1)).await });
        tokio::task::yield_now().await;
        assert!(!sender.is_finished(), "waits while the lane is full");
        let mut out = Vec::new();
        inbox.recv_many(&mut out, 10).await;
        sender.await.unwrap().unwrap();
        inbox.recv_many(&mut out, 10).await;
        assert_eq!(out.iter().map(summary).collect::<Vec<_>>(), ["a 0", "a 1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn close_wakes_waiting_senders() {
        let inbox = Inbox::new();
        let a = inbox.lane("a", 1);
        a.try_send(ev("a", Severity::Info, 0)).unwrap();
        let sender = tokio::spawn(async move { a.send(ev("a", Severity::Info, 1)).await });
        tokio::task::yield_now().await;
        inbox.close();
        assert!(matches!(sender.await.unwrap(), Err(SendError::Closed(_))));
    }
}
