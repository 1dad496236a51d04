//! Faults the tests inject on purpose, all off in production: one value in the
//! daemon's options (`--fault NAME[=N]`, hidden), handed to the parts it concerns.

use std::str::FromStr;

/// The faults to inject.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Changes are logged but never applied to SQLite, so a crash leaves them in the
    /// intent log alone (`stall-apply`; the crash-recovery test).
    pub stall_apply: bool,
    /// This io_uring queue fails before it registers (`fail-queue=N`).
    pub fail_queue: Option<usize>,
    /// Every io_uring queue fails after handling this many requests
    /// (`fail-queue-after=N`; a queue that stops while the mount is live).
    pub fail_queue_after: Option<u64>,
}

/// One `--fault` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// See [`Faults::stall_apply`].
    StallApply,
    /// See [`Faults::fail_queue`].
    FailQueue(usize),
    /// See [`Faults::fail_queue_after`].
    FailQueueAfter(u64),
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Fault, String> {
        let (name, arg) = match s.split_once('=') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let num = |a: Option<&str>| -> Result<u64, String> {
            a.ok_or_else(|| format!("fault {name} needs =N"))?
                .parse()
                .map_err(|e| format!("fault {name}: {e}"))
        };
        match name {
            "stall-apply" if arg.is_none() => Ok(Fault::StallApply),
            "fail-queue" => Ok(Fault::FailQueue(num(arg)? as usize)),
            "fail-queue-after" => Ok(Fault::FailQueueAfter(num(arg)?)),
            _ => Err(format!(
                "unknown fault '{s}' (stall-apply, fail-queue=N, fail-queue-after=N)"
            )),
        }
    }
}

impl Faults {
    /// The faults a list of `--fault` arguments names.
    pub fn from_list(list: &[Fault]) -> Faults {
        let mut f = Faults::default();
        for x in list {
            match *x {
                Fault::StallApply => f.stall_apply = true,
                Fault::FailQueue(q) => f.fail_queue = Some(q),
                Fault::FailQueueAfter(n) => f.fail_queue_after = Some(n),
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_fault_and_refuses_the_rest() {
        let list: Vec<Fault> = ["stall-apply", "fail-queue=1", "fail-queue-after=300"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            Faults::from_list(&list),
            Faults {
                stall_apply: true,
                fail_queue: Some(1),
                fail_queue_after: Some(300),
            }
        );
        assert!("fail-queue"
            .parse::<Fault>()
            .unwrap_err()
            .contains("needs =N"));
        assert!("stall-apply=2".parse::<Fault>().is_err());
        assert!("nope"
            .parse::<Fault>()
            .unwrap_err()
            .contains("unknown fault"));
    }
}
