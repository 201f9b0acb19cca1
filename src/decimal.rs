//! Decimal digits without the formatting machinery: ports, IPv4 octets
//! and Max-Forwards are written on every request, where `format!` or
//! `to_string` cost a String and `fmt::write` each time (issue 15).

/// `n` in decimal, as `Display` writes it, at the end of `buf`.
pub fn digits(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Appends `n` in decimal to `out`.
pub fn push(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(digits(n, &mut [0u8; 20]));
}

/// Appends `n` in decimal to `out`.
pub fn push_str(out: &mut String, n: u64) {
    for &d in digits(n, &mut [0u8; 20]) {
        out.push(char::from(d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_to_string_writes() {
        for n in [
            0u64,
            1,
            7,
            9,
            10,
            69,
            70,
            99,
            100,
            255,
            5060,
            9999,
            10_000,
            65_535,
            1 << 32,
            u64::MAX,
        ] {
            let mut buf = [0u8; 20];
            assert_eq!(digits(n, &mut buf), n.to_string().as_bytes(), "{n}");
            let mut v = b"x".to_vec();
            push(&mut v, n);
            assert_eq!(v, format!("x{n}").into_bytes());
            let mut s = String::from("x");
            push_str(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
    }
}
