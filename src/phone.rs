//! Phone numbers: the one normalisation of SPEC T-5, used wherever a phone
//! enters siptrack, and the CRM phone formatter of SPEC C-3. Pure.
