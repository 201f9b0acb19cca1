//! CRM hooks (SPEC section 5): the local CRM's deals, the payloads, the
//! durable outbox they go through, the webhook sender and the worker that
//! delivers them.

pub mod adapter;
pub mod amocrm;
pub mod bitrix24;
pub mod local;
pub mod metrics;
pub mod outbox;
pub mod payload;
pub mod rate;
pub mod status_hook;
pub mod transport;
pub mod webhook;
pub mod worker;
