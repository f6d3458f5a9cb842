//! A sale's waiting room: its settings, and the admission schedule that says, from the clock
//! alone, which places in line are admitted.
//!
//! Places are admitted in order at a rate. The rate may change while the sale runs (pause,
//! resume, a new rate), so the schedule is a short list of segments `(since, rate)`: from
//! `since` (ms on Redis's clock) on, `rate` places a second. The places admitted at `t` are
//! `floor(Σ rate_i × overlap_i(t) / 1000)`, where `overlap_i(t)` is how much of segment `i`
//! lies before `t`. Nothing counts admissions, so nothing can stall them: every replica and
//! `lua/queue.lua` compute the same figure from the same list (`lua/prelude.lua` holds the Lua
//! twin of [`Schedule::admitted`] and [`Schedule::admit_time`]; `tests/api/queue.rs` holds
//! the two to the same answers).
//!
//! The list is part of the sale's definition in JetStream (recorded before Redis, like every
//! setting), so a sale rebuilt after a Redis loss admits every place at the time it did.

use serde::{Deserialize, Serialize};

use super::InvalidInput;

/// The fastest admission rate a queue takes: `rate × ms` then stays exact in a Lua number
/// for a schedule of years.
pub const MAX_ADMIT_PER_SEC: u64 = 100_000;
/// The longest a line may open before the sale: a week.
pub const MAX_OPENS_BEFORE_SECS: u64 = 7 * 86_400;
/// The longest an admission may last: a day.
pub const MAX_ADMISSION_SECS: u64 = 86_400;
/// The most rate changes (pauses, resumes, new rates) a sale's schedule keeps: each purchase
/// call reads the whole list.
pub const MAX_SEGMENTS: usize = 64;

/// What an admin PUTs: `"queue": {"admit_per_sec": 200, "opens_before_secs": 900,
/// "admission_secs": 300}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueSettings {
    /// Places admitted a second (1–100000).
    pub admit_per_sec: u64,
    /// How long before `starts_at` buyers may join (0 to a week): everyone who joins before
    /// `starts_at` is placed in a random order drawn at the open.
    pub opens_before_secs: u64,
    /// How long an admission lasts (1 s to a day); then it lapses.
    pub admission_secs: u64,
}

impl QueueSettings {
    pub fn checked(self) -> Result<Self, InvalidInput> {
        if !(1..=MAX_ADMIT_PER_SEC).contains(&self.admit_per_sec) {
            return Err(InvalidInput(format!(
                "queue.admit_per_sec must be 1 to {MAX_ADMIT_PER_SEC} (pause a queue with POST /v1/sales/{{sku}}/queue/pause)"
            )));
        }
        if self.opens_before_secs > MAX_OPENS_BEFORE_SECS {
            return Err(InvalidInput(format!(
                "queue.opens_before_secs must be at most {MAX_OPENS_BEFORE_SECS}"
            )));
        }
        if !(1..=MAX_ADMISSION_SECS).contains(&self.admission_secs) {
            return Err(InvalidInput(format!(
                "queue.admission_secs must be 1 to {MAX_ADMISSION_SECS}"
            )));
        }
        Ok(self)
    }
}

/// From `since` (ms) on, `rate` places a second (0: paused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub since: i64,
    pub rate: u64,
}

/// The admission schedule: segments in order of `since`, the first where admission starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule(Vec<Segment>);

impl Schedule {
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// When admission starts: the sale's open (or the queue's creation, if later).
    pub fn starts(&self) -> i64 {
        self.0.first().map_or(0, |s| s.since)
    }

    /// The rate now in force (the last segment's), 0 when paused.
    pub fn rate(&self) -> u64 {
        self.0.last().map_or(0, |s| s.rate)
    }

    /// How many places are admitted at `t` (ms): places 1..=this.
    pub fn admitted(&self, t: i64) -> u64 {
        let mut milli_places: u128 = 0;
        for (i, segment) in self.0.iter().enumerate() {
            if t <= segment.since {
                break;
            }
            let end = self.0.get(i + 1).map_or(t, |next| next.since.min(t));
            milli_places += u128::from(segment.rate) * (end - segment.since) as u128;
        }
        u64::try_from(milli_places / 1000).unwrap_or(u64::MAX)
    }

    /// The first instant (ms) at which `place` is admitted; `None` while the schedule, as it
    /// stands, never reaches it (paused before it).
    pub fn admit_time(&self, place: u64) -> Option<i64> {
        let mut need = u128::from(place) * 1000;
        for (i, segment) in self.0.iter().enumerate() {
            let rate = u128::from(segment.rate);
            let next = self.0.get(i + 1).map(|n| n.since);
            let capacity = next.map(|n| rate * (n - segment.since).max(0) as u128);
            match capacity {
                Some(capacity) if need > capacity => need -= capacity,
                _ if rate == 0 => return None,
                // ceil(need / rate) ms into the segment.
                _ => return Some(segment.since + need.div_ceil(rate) as i64),
            }
        }
        None
    }

    /// The schedule with the rate changed to `rate` at `now`: a new segment, or, before
    /// admission starts, the first segment's rate replaced. No change when the rate is
    /// already `rate`; `None` when the schedule holds its most segments.
    pub fn with_rate(&self, rate: u64, now: i64) -> Option<Schedule> {
        if self.rate() == rate {
            return Some(self.clone());
        }
        let mut segments = self.0.clone();
        let full = segments.len() >= MAX_SEGMENTS;
        match segments.last_mut() {
            Some(last) if now <= last.since => last.rate = rate,
            _ if full => return None,
            _ => segments.push(Segment { since: now, rate }),
        }
        Some(Schedule(segments))
    }

    /// The one-segment schedule of a queue whose admission starts at `starts` at `rate`.
    pub fn starting(starts: i64, rate: u64) -> Schedule {
        Schedule(vec![Segment {
            since: starts,
            rate,
        }])
    }

    /// Reads what [`Schedule::encode`] wrote.
    pub fn decode(text: &str) -> Option<Schedule> {
        let segments = text
            .split(',')
            .map(|pair| {
                let (since, rate) = pair.split_once(':')?;
                Some(Segment {
                    since: since.parse().ok()?,
                    rate: rate.parse().ok()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        (!segments.is_empty()).then_some(Schedule(segments))
    }

    /// `since:rate,since:rate,…`, as the scripts read it.
    pub fn encode(&self) -> String {
        let pairs: Vec<String> = self
            .0
            .iter()
            .map(|s| format!("{}:{}", s.since, s.rate))
            .collect();
        pairs.join(",")
    }
}

/// A sale's queue: what the admin set, and the schedule it has run to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    pub settings: QueueSettings,
    pub schedule: Schedule,
}

impl Queue {
    /// The queue a PUT leaves: `settings` on a sale whose admission starts at `starts_at`
    /// (`None`: at once), given the queue it had (`before`), at `now`. Before admission
    /// starts the schedule is one segment from the open; after, a new rate is a new segment
    /// from `now`, and a paused queue stays paused (the new rate applies when it resumes).
    pub fn put(
        settings: QueueSettings,
        before: Option<&Queue>,
        starts_at: Option<i64>,
        now: i64,
    ) -> Queue {
        let starts = starts_at.unwrap_or(now);
        let schedule = match before {
            Some(before) if before.schedule.starts() <= now => {
                if before.paused() {
                    before.schedule.clone()
                } else {
                    before
                        .schedule
                        .with_rate(settings.admit_per_sec, now)
                        .unwrap_or_else(|| before.schedule.clone())
                }
            }
            Some(before) if before.paused() => Schedule::starting(starts.max(now), 0),
            _ => Schedule::starting(starts.max(now), settings.admit_per_sec),
        };
        Queue { settings, schedule }
    }

    pub fn paused(&self) -> bool {
        self.schedule.rate() == 0
    }

    /// When buyers may start to join (ms).
    pub fn opens_at(&self) -> i64 {
        self.schedule.starts() - (self.settings.opens_before_secs * 1000) as i64
    }

    pub fn admission_ms(&self) -> i64 {
        (self.settings.admission_secs * 1000) as i64
    }

    /// The queue paused (`rate` 0) or resumed at `now`; `None` when its schedule holds its
    /// most segments.
    pub fn switched(&self, resume: bool, now: i64) -> Option<Queue> {
        let rate = if resume {
            self.settings.admit_per_sec
        } else {
            0
        };
        Some(Queue {
            settings: self.settings,
            schedule: self.schedule.with_rate(rate, now)?,
        })
    }

    /// Where `place` stands at `now`.
    pub fn admission(&self, place: u64, now: i64) -> Admission {
        match self.schedule.admit_time(place) {
            Some(at) if now < at => Admission::Waiting { admit_at: Some(at) },
            Some(at) if now < at + self.admission_ms() => Admission::Admitted {
                admit_at: at,
                until: at + self.admission_ms(),
            },
            Some(at) => Admission::Lapsed {
                admit_at: at,
                until: at + self.admission_ms(),
            },
            None => Admission::Waiting { admit_at: None },
        }
    }

    /// `<admit_per_sec>;<opens_before_secs>;<admission_secs>;<schedule>`: the sale hash's
    /// `queue` field, as the scripts read it.
    pub fn encode(&self) -> String {
        let s = &self.settings;
        format!(
            "{};{};{};{}",
            s.admit_per_sec,
            s.opens_before_secs,
            s.admission_secs,
            self.schedule.encode()
        )
    }

    pub fn decode(text: &str) -> Option<Queue> {
        let mut fields = text.splitn(4, ';');
        let mut number = || fields.next()?.parse().ok();
        let settings = QueueSettings {
            admit_per_sec: number()?,
            opens_before_secs: number()?,
            admission_secs: number()?,
        };
        let schedule = Schedule::decode(fields.next()?)?;
        Some(Queue { settings, schedule })
    }
}

/// A buyer's place in a sale's line, as its queue token holds it: `line` is when the line's
/// admission started (ms), so a token of an earlier sale on the same sku names another line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub line: i64,
    pub place: u64,
}

/// Where a place stands at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Not yet: admitted at `admit_at` if the schedule holds (`None`: paused before it).
    Waiting { admit_at: Option<i64> },
    /// Admitted at `admit_at`; it lapses at `until`.
    Admitted { admit_at: i64, until: i64 },
    /// Admitted at `admit_at`, lapsed at `until`.
    Lapsed { admit_at: i64, until: i64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(segments: &[(i64, u64)]) -> Schedule {
        Schedule(
            segments
                .iter()
                .map(|&(since, rate)| Segment { since, rate })
                .collect(),
        )
    }

    #[test]
    fn settings_keep_their_bounds() {
        let settings = |admit_per_sec, opens_before_secs, admission_secs| QueueSettings {
            admit_per_sec,
            opens_before_secs,
            admission_secs,
        };
        for valid in [
            settings(1, 0, 1),
            settings(100_000, 604_800, 86_400),
            settings(200, 900, 300),
        ] {
            assert_eq!(valid.checked(), Ok(valid));
        }
        for invalid in [
            settings(0, 0, 1),
            settings(100_001, 0, 1),
            settings(1, 604_801, 1),
            settings(1, 0, 0),
            settings(1, 0, 86_401),
        ] {
            assert!(invalid.checked().is_err(), "{invalid:?}");
        }
    }

    #[test]
    fn places_are_admitted_at_the_rate_from_the_start() {
        let s = schedule(&[(10_000, 200)]);
        assert_eq!(s.admitted(9_000), 0);
        assert_eq!(s.admitted(10_000), 0);
        assert_eq!(s.admitted(10_004), 0);
        assert_eq!(s.admitted(10_005), 1);
        assert_eq!(s.admitted(11_000), 200);
        assert_eq!(s.admit_time(1), Some(10_005));
        assert_eq!(s.admit_time(200), Some(11_000));
        assert_eq!(s.admit_time(201), Some(11_005));
        // A rate that does not divide a second: place 1 at ceil(1000 / 3) ms.
        let third = schedule(&[(0, 3)]);
        assert_eq!(third.admit_time(1), Some(334));
        assert_eq!(third.admitted(333), 0);
        assert_eq!(third.admitted(334), 1);
    }

    #[test]
    fn a_pause_holds_the_line_and_a_resume_goes_on_from_where_it_stood() {
        // 100/s from 0, paused at 2 s (200 admitted), resumed at 5 s at 50/s.
        let s = schedule(&[(0, 100), (2_000, 0), (5_000, 50)]);
        assert_eq!(s.admitted(2_000), 200);
        assert_eq!(s.admitted(4_999), 200);
        assert_eq!(s.admitted(5_000), 200);
        assert_eq!(s.admitted(6_000), 250);
        assert_eq!(s.admit_time(200), Some(2_000));
        assert_eq!(s.admit_time(201), Some(5_020));
        let paused = schedule(&[(0, 100), (2_000, 0)]);
        assert_eq!(paused.admit_time(200), Some(2_000));
        assert_eq!(paused.admit_time(201), None);
        assert_eq!(paused.admitted(100_000), 200);
    }

    #[test]
    fn admitted_and_admit_time_agree_everywhere() {
        let s = schedule(&[(1_000, 7), (1_900, 0), (2_300, 1_000), (2_310, 3)]);
        for place in 1..=40 {
            let at = s.admit_time(place).expect("the last segment admits");
            assert!(s.admitted(at) >= place, "place {place} at {at}");
            assert!(s.admitted(at - 1) < place, "place {place} before {at}");
        }
    }

    #[test]
    fn rate_changes_append_segments_and_a_change_before_the_start_replaces_it() {
        let s = Schedule::starting(1_000, 10);
        assert_eq!(s.with_rate(20, 500), Some(schedule(&[(1_000, 20)])));
        assert_eq!(
            s.with_rate(20, 3_000),
            Some(schedule(&[(1_000, 10), (3_000, 20)]))
        );
        assert_eq!(s.with_rate(10, 3_000), Some(s.clone()));
        let mut full = s.clone();
        for i in 1..MAX_SEGMENTS as i64 {
            full = full.with_rate((i % 2) as u64, 2_000 + i).expect("room");
        }
        assert_eq!(full.with_rate(99, 9_000), None);
    }

    #[test]
    fn a_put_keeps_a_running_schedule_and_a_pause() {
        let settings = QueueSettings {
            admit_per_sec: 10,
            opens_before_secs: 60,
            admission_secs: 30,
        };
        let fresh = Queue::put(settings, None, Some(100_000), 1_000);
        assert_eq!(fresh.schedule, schedule(&[(100_000, 10)]));
        assert_eq!(fresh.opens_at(), 40_000);
        // A sale already open: admission starts now.
        assert_eq!(
            Queue::put(settings, None, Some(100), 1_000).schedule,
            schedule(&[(1_000, 10)])
        );
        let faster = QueueSettings {
            admit_per_sec: 20,
            ..settings
        };
        let running = Queue::put(faster, Some(&fresh), Some(100_000), 150_000);
        assert_eq!(running.schedule, schedule(&[(100_000, 10), (150_000, 20)]));
        let paused = running.switched(false, 160_000).expect("room");
        assert!(paused.paused());
        let still = Queue::put(settings, Some(&paused), Some(100_000), 170_000);
        assert_eq!(still.schedule, paused.schedule);
        // Paused before the start: a PUT then keeps it paused, and moves the start.
        let held = fresh.switched(false, 2_000).expect("room");
        assert_eq!(held.schedule, schedule(&[(100_000, 0)]));
        let moved = Queue::put(settings, Some(&held), Some(120_000), 3_000);
        assert_eq!(moved.schedule, schedule(&[(120_000, 0)]));
        let unpaused = Queue::put(faster, Some(&fresh), Some(120_000), 3_000);
        assert_eq!(unpaused.schedule, schedule(&[(120_000, 20)]));
        let resumed = still.switched(true, 180_000).expect("room");
        assert_eq!(resumed.schedule.rate(), 10);
        assert_eq!(Queue::decode(&resumed.encode()), Some(resumed));
    }

    #[test]
    fn an_admission_lasts_its_window() {
        let queue = Queue {
            settings: QueueSettings {
                admit_per_sec: 1,
                opens_before_secs: 0,
                admission_secs: 10,
            },
            schedule: schedule(&[(0, 1)]),
        };
        assert_eq!(
            queue.admission(3, 2_999),
            Admission::Waiting {
                admit_at: Some(3_000)
            }
        );
        assert_eq!(
            queue.admission(3, 3_000),
            Admission::Admitted {
                admit_at: 3_000,
                until: 13_000
            }
        );
        assert_eq!(
            queue.admission(3, 13_000),
            Admission::Lapsed {
                admit_at: 3_000,
                until: 13_000
            }
        );
    }
}
