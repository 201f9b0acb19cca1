//! The filter language of SPEC T-6 (pool segments, later CRM filters).
