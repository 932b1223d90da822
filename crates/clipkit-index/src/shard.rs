//! Splitting one file tree between several indexing workers: worker `I` of `N` indexes the
//! files whose [path id](crate::paths::path_id) is `I` modulo `N`. Path ids are hashes of the
//! path's bytes, so the assignment is stable (the same file always goes to the same worker,
//! on every machine and every run) and even, and the workers need no coordination: each
//! writes only its own rows of the shared collection, and removes only its own missing files.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::paths::path_id;

/// Worker `index` of `count` (`0 ≤ index < count`). The default, `0/1`, is the whole tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    index: u64,
    count: u64,
}

impl Default for Shard {
    fn default() -> Self {
        Self::ALL
    }
}

/// Why a shard could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("`{0}` is not of the form I/N (worker I of N, counting from 0)")]
    Syntax(String),
    #[error("a tree is split between 1 or more workers, not {0}")]
    NoWorkers(u64),
    #[error("worker {index} does not exist among {count} (they are numbered 0 to {})", count - 1)]
    OutOfRange { index: u64, count: u64 },
}

impl Shard {
    /// Every file: a single worker.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: u64, count: u64) -> Result<Self, ShardError> {
        if count == 0 {
            return Err(ShardError::NoWorkers(count));
        }
        if index >= count {
            return Err(ShardError::OutOfRange { index, count });
        }
        Ok(Self { index, count })
    }

    pub fn index(&self) -> u64 {
        self.index
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether this worker indexes `path`.
    pub fn owns(&self, path: &Path) -> bool {
        self.count == 1 || path_id(path) as u64 % self.count == self.index
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Self, ShardError> {
        let syntax = || ShardError::Syntax(s.to_owned());
        let (i, n) = s.split_once('/').ok_or_else(syntax)?;
        let i: u64 = i.trim().parse().map_err(|_| syntax())?;
        let n: u64 = n.trim().parse().map_err(|_| syntax())?;
        Shard::new(i, n)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!("1/3".parse::<Shard>().unwrap(), Shard::new(1, 3).unwrap());
        assert_eq!("0/1".parse::<Shard>().unwrap(), Shard::ALL);
        for bad in ["", "1", "3/3", "0/0", "-1/2", "a/b", "1/2/3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_path_has_exactly_one_worker() {
        let shards: Vec<Shard> = (0..3).map(|i| Shard::new(i, 3).unwrap()).collect();
        let mut per_worker = [0usize; 3];
        for n in 0..3000 {
            let path = format!("/photos/{n}.jpg");
            let owners: Vec<usize> = (0..3)
                .filter(|&i| shards[i].owns(Path::new(&path)))
                .collect();
            assert_eq!(owners.len(), 1, "{path}");
            per_worker[owners[0]] += 1;
            assert!(Shard::ALL.owns(Path::new(&path)));
        }
        // Hash ids spread evenly: each worker gets about a third.
        assert!(
            per_worker.iter().all(|&c| (850..1150).contains(&c)),
            "{per_worker:?}"
        );
    }
}
