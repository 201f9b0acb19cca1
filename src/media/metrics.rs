//! Media counters for `/metrics`, written by the relay and writer threads
//! and the SIP thread, read by the HTTP handler. Relaxed atomics: each is
//! a count on its own, nothing is derived from two of them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct MediaMetrics {
    pub relayed_packets: AtomicU64,
    pub dropped_other_source: AtomicU64,
    pub dropped_no_destination: AtomicU64,
    pub dropped_unknown_port: AtomicU64,
    /// Datagrams longer than the relay's 2 KiB slots (cut by the receive).
    pub dropped_oversized: AtomicU64,
    /// Relayed packets whose `send_to` failed (unreachable address, full buffer).
    pub send_errors: AtomicU64,
    pub active_sessions: AtomicU64,
    pub recordings_started: AtomicU64,
    pub recordings_finished: AtomicU64,
    pub recording_write_errors: AtomicU64,
    /// Packets the recorder queue had no room for (the disk fell behind).
    pub recorder_queue_overflow: AtomicU64,
    pub recordings_repaired: AtomicU64,
    pub unrecorded_no_ports: AtomicU64,
    pub unrecorded_codec: AtomicU64,
    pub unrecorded_disk: AtomicU64,
    /// Answered calls in which no audio packet came either way.
    pub unrecorded_no_media: AtomicU64,
    /// Recordings that heard media of no G.711 type only (the answer
    /// allowed G.711 but both sides used another codec): the writer's
    /// count, beside the media phase's `unrecorded_codec`.
    pub unrecorded_codec_in_media: AtomicU64,
    /// Of finished recordings: audio samples that came too late to be
    /// placed (reordered beyond the window), new bases (SSRC changes,
    /// timestamp jumps, a side that fell behind), and packets of payload
    /// types not recorded.
    pub recording_late_samples: AtomicU64,
    pub recording_rebases: AtomicU64,
    pub recording_other_payload_packets: AtomicU64,
    pub unrecorded_disabled: AtomicU64,
    /// Why `media.recordings_dir` cannot take recordings: found at start,
    /// then what the last recording that ended said of it (None: it can,
    /// or recording is off). See [`MediaMetrics::note_recording`].
    pub dir_problem: std::sync::Mutex<Option<String>>,
}

impl MediaMetrics {
    /// The media phase's counts (kept on the SIP thread), copied each tick.
    pub fn publish_anchor(&self, s: &super::anchor::AnchorStats) {
        self.unrecorded_no_ports
            .store(s.unrecorded_no_ports, Relaxed);
        self.unrecorded_codec.store(s.unrecorded_codec, Relaxed);
        self.unrecorded_disabled
            .store(s.unrecorded_disabled, Relaxed);
    }

    /// What a recording that ended says of the directory: a disk error
    /// (full, read-only, gone) is the problem `/healthz` reports from now
    /// on, a complete file clears any. Other outcomes (no media, a codec,
    /// the size limit) say nothing of the disk. Trial, 2026-12-02: a disk
    /// that filled up while running left `/healthz` at `ok`, and one
    /// repaired after a bad start kept "recordings failing" until restart.
    pub fn note_recording(
        &self,
        result: &Result<super::recorder::Summary, super::recorder::NoRecording>,
    ) {
        let problem = match result {
            Ok(_) => None,
            Err(super::recorder::NoRecording::Disk(e)) => {
                Some(format!("the last recording failed: {e}"))
            }
            Err(_) => return,
        };
        if let Ok(mut slot) = self.dir_problem.lock() {
            *slot = problem;
        }
    }

    /// See `dir_problem`.
    pub fn dir_problem(&self) -> Option<String> {
        self.dir_problem.lock().ok().and_then(|p| p.clone())
    }

    /// Prometheus text.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Relaxed);
        let mut out = String::with_capacity(2048);
        let mut line = |name: &str, kind: &str, help: &str, labelled: &[(&str, u64)]| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, v) in labelled {
                if labels.is_empty() {
                    out.push_str(&format!("{name} {v}\n"));
                } else {
                    out.push_str(&format!("{name}{{{labels}}} {v}\n"));
                }
            }
        };
        line(
            "siptrack_media_relayed_packets_total",
            "counter",
            "RTP and RTCP packets relayed",
            &[("", g(&self.relayed_packets))],
        );
        line(
            "siptrack_media_dropped_packets_total",
            "counter",
            "Media packets not relayed, by reason",
            &[
                ("reason=\"other_source\"", g(&self.dropped_other_source)),
                ("reason=\"no_destination\"", g(&self.dropped_no_destination)),
                ("reason=\"unknown_port\"", g(&self.dropped_unknown_port)),
                ("reason=\"oversized\"", g(&self.dropped_oversized)),
            ],
        );
        line(
            "siptrack_media_send_errors_total",
            "counter",
            "Media packets the relay failed to send (sendto errors)",
            &[("", g(&self.send_errors))],
        );
        line(
            "siptrack_media_sessions",
            "gauge",
            "Calls whose media siptrack relays now",
            &[("", g(&self.active_sessions))],
        );
        line(
            "siptrack_recordings_total",
            "counter",
            "Recordings started and finished",
            &[
                ("state=\"started\"", g(&self.recordings_started)),
                ("state=\"finished\"", g(&self.recordings_finished)),
            ],
        );
        line(
            "siptrack_unrecorded_calls_total",
            "counter",
            "Tracked calls without a recording, by reason",
            &[
                ("reason=\"no_ports\"", g(&self.unrecorded_no_ports)),
                (
                    "reason=\"codec\"",
                    g(&self.unrecorded_codec) + g(&self.unrecorded_codec_in_media),
                ),
                ("reason=\"disk\"", g(&self.unrecorded_disk)),
                ("reason=\"no_media\"", g(&self.unrecorded_no_media)),
                ("reason=\"disabled\"", g(&self.unrecorded_disabled)),
            ],
        );
        line(
            "siptrack_recording_write_errors_total",
            "counter",
            "Recordings stopped by a write error (disk full, I/O error)",
            &[("", g(&self.recording_write_errors))],
        );
        line(
            "siptrack_recorder_queue_overflow_total",
            "counter",
            "Packets not recorded because the recorder queue was full",
            &[("", g(&self.recorder_queue_overflow))],
        );
        line(
            "siptrack_recording_late_samples_total",
            "counter",
            "Audio samples (8 kHz) left out of finished recordings for coming too late",
            &[("", g(&self.recording_late_samples))],
        );
        line(
            "siptrack_recording_rebases_total",
            "counter",
            "New timeline bases in finished recordings (SSRC change, timestamp jump, a side fallen behind)",
            &[("", g(&self.recording_rebases))],
        );
        line(
            "siptrack_recording_other_payload_packets_total",
            "counter",
            "Packets of finished recordings in a payload type not recorded (not G.711, events or CN)",
            &[("", g(&self.recording_other_payload_packets))],
        );
        line(
            "siptrack_recordings_repaired_total",
            "counter",
            "Recordings a crash left unfinished, repaired at start (partial)",
            &[("", g(&self.recordings_repaired))],
        );
        line(
            "siptrack_recordings_dir_usable",
            "gauge",
            "1 when media.recordings_dir takes recordings: checked at start, then what the last recording that ended or failed said (0: calls go through unrecorded)",
            &[("", u64::from(self.dir_problem().is_none()))],
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_rendered_by_name() {
        let m = MediaMetrics::default();
        m.relayed_packets.store(7, Relaxed);
        m.dropped_other_source.store(2, Relaxed);
        m.unrecorded_codec.store(1, Relaxed);
        m.unrecorded_codec_in_media.store(1, Relaxed);
        m.recording_late_samples.store(160, Relaxed);
        m.send_errors.store(3, Relaxed);
        let text = m.render();
        for want in [
            "siptrack_media_relayed_packets_total 7\n",
            "siptrack_media_dropped_packets_total{reason=\"other_source\"} 2\n",
            "siptrack_unrecorded_calls_total{reason=\"codec\"} 2\n",
            "siptrack_recording_late_samples_total 160\n",
            "siptrack_recording_rebases_total 0\n",
            "siptrack_recording_other_payload_packets_total 0\n",
            "siptrack_unrecorded_calls_total{reason=\"disabled\"} 0\n",
            "siptrack_media_sessions 0\n",
            "siptrack_media_send_errors_total 3\n",
            "siptrack_recording_write_errors_total 0\n",
            "siptrack_recordings_repaired_total 0\n",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
    }
}
