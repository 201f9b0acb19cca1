//! G.711 µ-law (RTP payload type 0) and A-law (8) to 16-bit linear PCM,
//! by the ITU-T G.711 segment formulas, as 256-entry tables built at
//! compile time. The encoders are here for tests and tone generation.

/// µ-law byte → linear sample (±32124).
pub const ULAW: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_formula(i as u8);
        i += 1;
    }
    t
};

/// A-law byte → linear sample (±32256).
pub const ALAW: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_formula(i as u8);
        i += 1;
    }
    t
};

const fn ulaw_formula(u: u8) -> i16 {
    // Bits are transmitted inverted; 0x84 is the bias (33 << 2).
    let u = !u;
    let mantissa = (u & 0x0f) as i32;
    let exponent = ((u & 0x70) >> 4) as i32;
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

const fn alaw_formula(a: u8) -> i16 {
    // Even bits are inverted on the wire.
    let a = a ^ 0x55;
    let mantissa = ((a & 0x0f) as i32) << 4;
    let segment = ((a & 0x70) >> 4) as i32;
    let magnitude = match segment {
        0 => mantissa + 8,
        1 => mantissa + 0x108,
        _ => (mantissa + 0x108) << (segment - 1),
    };
    if a & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

/// Decodes a µ-law payload, appending to `out`.
pub fn decode_ulaw(payload: &[u8], out: &mut Vec<i16>) {
    out.extend(payload.iter().map(|&b| ULAW[usize::from(b)]));
}

/// Decodes an A-law payload, appending to `out`.
pub fn decode_alaw(payload: &[u8], out: &mut Vec<i16>) {
    out.extend(payload.iter().map(|&b| ALAW[usize::from(b)]));
}

/// Linear → µ-law (G.711 with the usual 32635 clip).
pub fn encode_ulaw(s: i16) -> u8 {
    const BIAS: i32 = 0x84;
    let sign = if s < 0 { 0x80 } else { 0 };
    let mag = (i32::from(s).abs().min(32635)) + BIAS;
    // Exponent: position of the highest set bit above bit 7.
    let exponent = (31 - mag.leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (mag >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// Linear → A-law.
pub fn encode_alaw(s: i16) -> u8 {
    let sign = if s >= 0 { 0x80 } else { 0 };
    let mag = i32::from(s).abs().min(32767) >> 3;
    let code = if mag < 32 {
        (mag >> 1) as u8
    } else {
        let segment = (31 - mag.leading_zeros() as i32 - 4).clamp(1, 7);
        ((segment << 4) as u8) | ((mag >> segment) & 0x0f) as u8
    };
    (sign | code) ^ 0x55
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // (µ-law byte, linear) from the G.711 tables.
        let ulaw: [(u8, i16); 9] = [
            (0xff, 0),
            (0x7f, 0),
            (0x00, -32124),
            (0x80, 32124),
            (0xfe, 8),
            (0x7e, -8),
            (0xf0, 120),
            (0x8f, 16764),
            (0xa0, 7932),
        ];
        for (b, want) in ulaw {
            assert_eq!(ULAW[usize::from(b)], want, "µ-law {b:#04x}");
        }
        // (A-law byte, linear)
        let alaw: [(u8, i16); 7] = [
            (0xd5, 8),
            (0x55, -8),
            (0xaa, 32256),
            (0x2a, -32256),
            (0xd4, 24),
            (0xc5, 264),
            (0x80, 5504),
        ];
        for (b, want) in alaw {
            assert_eq!(ALAW[usize::from(b)], want, "A-law {b:#04x}");
        }
        let mut out = Vec::new();
        decode_ulaw(&[0xff, 0x80], &mut out);
        decode_alaw(&[0xd5, 0x2a], &mut out);
        assert_eq!(out, [0, 32124, 8, -32256]);
    }

    #[test]
    fn tables_are_monotonic_per_sign() {
        // µ-law 0x80..=0xff runs from loudest positive down to zero.
        for b in 0x80..0xffusize {
            assert!(ULAW[b] > ULAW[b + 1], "µ-law {b:#x}");
        }
        for b in 0x00..0x7fusize {
            assert!(ULAW[b] < ULAW[b + 1], "µ-law {b:#x}");
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        // Every code decodes to a value that encodes back to the same code
        // (µ-law 0x7f, "negative zero", encodes as 0xff).
        for b in 0..=255u8 {
            let u = encode_ulaw(ULAW[usize::from(b)]);
            assert_eq!(ULAW[usize::from(u)], ULAW[usize::from(b)], "µ-law {b:#x}");
            assert_eq!(encode_alaw(ALAW[usize::from(b)]), b, "A-law {b:#x}");
        }
        // Quantisation error stays within half a step of the segment.
        for s in (-32000i16..32000).step_by(97) {
            let u = i32::from(ULAW[usize::from(encode_ulaw(s))]);
            let a = i32::from(ALAW[usize::from(encode_alaw(s))]);
            let tol = (i32::from(s).abs() / 16).max(16);
            assert!((u - i32::from(s)).abs() <= tol, "µ-law {s} → {u}");
            assert!((a - i32::from(s)).abs() <= tol, "A-law {s} → {a}");
        }
    }
}
