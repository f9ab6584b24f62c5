//! The board where the reactors of one server post their counters, so that
//! the one serving `--metrics-listen` can answer a scrape with the whole
//! server's counts. Each reactor owns its counters and shares nothing else;
//! the board is the one place they meet, and only once per loop turn.
//!
//! An operations feature (`--metrics-listen`): leave it for later.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::metrics::Counters;

/// Where every reactor of a server posts a copy of its counters, so that the
/// one serving scrapes can add them up. Posting is a lock and a copy of a
/// few hundred bytes once per loop turn, never per exchange, and only with
/// `--metrics-listen` and several reactors; nothing waits on it but a scrape.
#[derive(Clone)]
pub struct Board {
    posts: Arc<[Mutex<Post>]>,
}

/// One reactor's counters, posted at the end of a turn, just before it
/// waits in `poll` again.
#[derive(Clone, Copy, Default)]
struct Post {
    counters: Counters,
    /// When it was posted: from then until its next post the reactor is
    /// waiting in poll (an idle reactor posts nothing for a long time).
    at: Option<Instant>,
}

impl Board {
    pub fn new(reactors: usize) -> Self {
        Board {
            posts: (0..reactors).map(|_| Mutex::default()).collect(),
        }
    }

    /// Reactor `index` posts its counters as they are `now`, as it is about
    /// to wait for events.
    pub fn post(&self, index: usize, counters: Counters, now: Instant) {
        if let Some(post) = self.posts.get(index) {
            // A poisoned post holds a whole copy: take it as it is.
            *post.lock().unwrap_or_else(PoisonError::into_inner) = Post {
                counters,
                at: Some(now),
            };
        }
    }

    /// The other reactors' counters as of `now`, added up: each one's time
    /// in poll includes the wait it has been in since its last post.
    pub fn others(&self, index: usize, now: Instant) -> Counters {
        let mut sum = Counters::default();
        for (i, post) in self.posts.iter().enumerate() {
            if i != index {
                let post = *post.lock().unwrap_or_else(PoisonError::into_inner);
                let mut counters = post.counters;
                if let Some(at) = post.at {
                    counters.poll_time += now.saturating_duration_since(at);
                }
                sum += counters;
            }
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An idle reactor posts nothing while it waits: the wait since its
    /// last post is its time in poll too.
    #[test]
    fn the_board_counts_a_waiting_reactors_wait_as_time_in_poll() {
        let board = Board::new(3);
        let posted = Instant::now();
        let mut counters = Counters::default();
        counters.accepted = 5;
        counters.poll_time = Duration::from_secs(1);
        board.post(1, counters, posted);
        board.post(2, counters, posted);
        board.post(0, counters, posted);
        let others = board.others(0, posted + Duration::from_secs(2));
        assert_eq!(others.accepted, 10, "reactor 0's own post is not added");
        assert_eq!(others.poll_time, Duration::from_secs(6));
    }
}
