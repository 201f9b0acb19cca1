-- Where a call's WAV is: the link base (http.public_url, else the HTTP
-- address) of the node that recorded it, written when several nodes share
-- the database; empty on one node and for calls without a recording. The
-- calls and deals APIs build a recorded call's link on it, so the link
-- opens whichever node answers (it named the answering node, a 404 unless
-- that node held the file).
ALTER TABLE calls ADD COLUMN recording_base TEXT NOT NULL DEFAULT '';
