//! CRM hooks (SPEC section 5). So far the payloads; the outbox and the
//! webhook sender follow (issue 5).

pub mod payload;
