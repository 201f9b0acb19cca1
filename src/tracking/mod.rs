//! Call tracking: which tracking number was dialed and which visit or
//! channel it belongs to (SPEC section 3).

pub mod filter;
pub mod pools;
pub mod router;

pub use router::TrackingRouter;
