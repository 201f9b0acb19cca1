//! Which open calls a crash cut short (SPEC L-1 `interrupted`) when
//! several nodes share one database: a call is open from its INVITE to its
//! record, under the run (process start) that saw it; a run's id names
//! its node. At start a node closes the open calls of its own earlier
//! runs only: another node's open calls are that node's live calls.

/// The node of a store opened without a name (tests, `siptrack leads`).
pub const DEFAULT_NODE: &str = "local";

/// A fresh run of `node`: `<node>/<random>`.
pub fn new_run(node: &str) -> String {
    let random: String = (0..16)
        .map(|_| char::from(b"0123456789abcdef"[fastrand::usize(..16)]))
        .collect();
    format!("{node}/{random}")
}

/// The run a call replayed from `node`'s journal is filed under: an
/// earlier run of this node, whatever it was.
pub fn earlier_run(node: &str) -> String {
    format!("{node}/earlier")
}

/// Whether an open call of run `run` was cut short, seen by run `mine`
/// of `node`: a run of this node other than this one. Ids without a node
/// (written before nodes had names, on one node) are this node's.
pub fn cut_short(run: &str, mine: &str, node: &str) -> bool {
    if run == mine {
        return false;
    }
    match run.rsplit_once('/') {
        Some((of, _)) => of == node,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_nodes_earlier_runs_were_cut_short() {
        let mine = "pbx-a:5060/0123";
        for (run, cut) in [
            (mine, false),
            ("pbx-a:5060/4567", true),
            ("pbx-a:5060/earlier", true),
            // Another node's call is live there.
            ("pbx-b:5060/89ab", false),
            ("pbx-a:50600/89ab", false),
            // Before nodes had names: one node, this one.
            ("0f1e2d3c4b5a6978", true),
        ] {
            assert_eq!(cut_short(run, mine, "pbx-a:5060"), cut, "{run}");
        }
        assert!(new_run("n").starts_with("n/"));
        assert!(cut_short(&earlier_run("n"), &new_run("n"), "n"));
    }
}
