//! What became of a call's recording (SPEC L-1 "recording (if any)",
//! M-1), as the call record keeps it: recorded, recorded up to a crash, or
//! not recorded and why. Stored as two columns (state, reason) so the
//! calls API and the link rules can read it without parsing prose.

use std::borrow::Cow;

use crate::media::recorder::NoRecording;

/// The reason of calls no media layer reported on: `record_calls = false`,
/// replay, calls recorded before recording existed.
pub const DISABLED: &str = "recording disabled";

/// The reason of a call this node took over from a node that died: its
/// media went through that node, and what it recorded stayed on that
/// node's disk (trial, 2026-12-03: such calls read `recording disabled`).
pub const TAKEN_OVER: &str =
    "taken over from the node that set the call up: its media and recording stayed there";

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Recording {
    /// A complete WAV, finalised at the call's end.
    Recorded,
    /// A WAV that a crash left unfinished, repaired at the next start: it
    /// holds the call up to the crash.
    Partial,
    /// No WAV. `reason`: `recording disabled`, `no free media ports`,
    /// `codec not recorded: G729`, `recording file: …` (disk), ….
    /// Borrowed for the fixed reasons: every call without media starts
    /// from `recording disabled`, which allocated once per call.
    NotRecorded { reason: Cow<'static, str> },
}

impl Default for Recording {
    /// Not recorded, `recording disabled`: what a call is when nothing
    /// anchored its media.
    fn default() -> Recording {
        Recording::not_recorded(DISABLED)
    }
}

impl From<&NoRecording> for Recording {
    fn from(why: &NoRecording) -> Recording {
        Recording::not_recorded(why.to_string())
    }
}

impl Recording {
    pub fn not_recorded(reason: impl Into<Cow<'static, str>>) -> Recording {
        Recording::NotRecorded {
            reason: reason.into(),
        }
    }

    /// Whether a WAV of the call exists (to serve and link).
    pub fn has_file(&self) -> bool {
        matches!(self, Recording::Recorded | Recording::Partial)
    }

    /// The state column and API value: `recorded`, `partial`, `not_recorded`.
    pub fn state(&self) -> &'static str {
        match self {
            Recording::Recorded => "recorded",
            Recording::Partial => "partial",
            Recording::NotRecorded { .. } => "not_recorded",
        }
    }

    /// Why there is no recording; None when there is one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Recording::NotRecorded { reason } => Some(reason.as_ref()),
            _ => None,
        }
    }

    /// Back from the two stored columns. A state this build does not know
    /// (a newer version wrote it) is read as not recorded, saying so,
    /// rather than failing the whole list.
    pub fn from_columns(state: &str, reason: &str) -> Recording {
        match state {
            "recorded" => Recording::Recorded,
            "partial" => Recording::Partial,
            "not_recorded" => Recording::not_recorded(reason.to_string()),
            other => Recording::not_recorded(format!("unknown recording state {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_round_trip() {
        for r in [
            Recording::Recorded,
            Recording::Partial,
            Recording::not_recorded("no free media ports"),
            Recording::not_recorded("codec not recorded: G729"),
            Recording::default(),
        ] {
            let back = Recording::from_columns(r.state(), r.reason().unwrap_or(""));
            assert_eq!(back, r);
        }
        assert_eq!(
            Recording::from_columns("later", ""),
            Recording::not_recorded("unknown recording state \"later\"")
        );
    }

    #[test]
    fn states_and_files() {
        for (r, state, reason, file) in [
            (Recording::Recorded, "recorded", None, true),
            (Recording::Partial, "partial", None, true),
            (
                Recording::default(),
                "not_recorded",
                Some("recording disabled"),
                false,
            ),
            (
                Recording::from(&NoRecording::Codec("G729".into())),
                "not_recorded",
                Some("codec not recorded: G729"),
                false,
            ),
            (
                Recording::from(&NoRecording::NoPorts),
                "not_recorded",
                Some("no free media ports"),
                false,
            ),
        ] {
            assert_eq!((r.state(), r.reason(), r.has_file()), (state, reason, file));
        }
    }

    /// The journal keeps call records as JSON: the outcome must read back.
    #[test]
    fn json_shape() {
        let j = serde_json::to_string(&Recording::not_recorded("x")).expect("json");
        assert_eq!(j, r#"{"state":"not_recorded","reason":"x"}"#);
        let back: Recording = serde_json::from_str(r#"{"state":"partial"}"#).expect("parse");
        assert_eq!(back, Recording::Partial);
    }

    /// The default (every call without media) borrows its reason; one
    /// read back from JSON or the columns owns it and is equal.
    #[test]
    fn the_default_reason_is_borrowed() {
        let d = Recording::default();
        assert!(matches!(
            &d,
            Recording::NotRecorded {
                reason: Cow::Borrowed(DISABLED)
            }
        ));
        let json = serde_json::to_string(&d).expect("json");
        assert_eq!(
            json,
            r#"{"state":"not_recorded","reason":"recording disabled"}"#
        );
        let back: Recording = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, d);
        assert_eq!(Recording::from_columns("not_recorded", DISABLED), d);
    }
}
