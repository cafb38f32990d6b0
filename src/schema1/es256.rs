//! ES256 signatures exactly as the p256 crate's RFC 6979 signer makes them, with the one
//! costly step, the nonce point k·G, done by AWS-LC's P-256 (assembly, a precomputed
//! table of G): the 113 µs that k·G takes in the p256 crate become 14 µs here.
//!
//! The nonce comes from the same `rfc6979` generator p256 uses and the scalar algebra
//! from p256 itself, so the signature is the p256 crate's to the bit; a test holds the
//! two together. If AWS-LC cannot give the point (it only fails to allocate), p256 signs.

use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::ops::{Invert, Reduce};
use p256::elliptic_curve::{Curve, Field, PrimeField};
use p256::{FieldBytes, NistP256, NonZeroScalar, Scalar, U256};
use sha2::{Digest as _, Sha256};

/// The HMAC hash of the RFC 6979 generator: the one p256's signer names (sha2 0.11's
/// SHA-256, a different crate version from ours).
type NonceHash = <NistP256 as ecdsa::DigestAlgorithm>::Digest;

/// The ES256 signature of `message` (r ‖ s, 64 bytes).
pub fn sign(key: &SigningKey, message: &[u8]) -> [u8; 64] {
    let z: [u8; 32] = Sha256::digest(message).into();
    let d = key.as_nonzero_scalar();
    let order = NistP256::ORDER;
    let mut nonces = rfc6979::KGenerator::<NonceHash, U256>::new(&d.to_repr(), &z, &[], &order);
    let z = reduce(&z);
    loop {
        let mut k_bytes = FieldBytes::default();
        nonces.fill_next_k(&mut k_bytes);
        let Some(k) = NonZeroScalar::from_repr(k_bytes).into_option() else {
            continue;
        };
        let Some(x) = aws_lc::base_point_x(&k_bytes.into()) else {
            return p256_signature(key, message);
        };
        let r = reduce(&x);
        let s = *Invert::invert(&k) * (z + r * d.as_ref());
        // Zero r or s (probability 2^-256) takes the next nonce, as RFC 6979 says.
        if bool::from(r.is_zero() | s.is_zero()) {
            continue;
        }
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&r.to_repr());
        signature[32..].copy_from_slice(&s.to_repr());
        return signature;
    }
}

/// The p256 crate's own signature, for when AWS-LC fails.
fn p256_signature(key: &SigningKey, message: &[u8]) -> [u8; 64] {
    let signature: Signature = key.sign(message);
    signature.to_bytes().into()
}

/// A big-endian 256-bit integer reduced into the scalar field (ECDSA's bits2int for a
/// 256-bit order).
fn reduce(bytes: &[u8; 32]) -> Scalar {
    <Scalar as Reduce<U256>>::reduce(&U256::from_be_slice(bytes))
}

/// The affine x of k·G by AWS-LC. Its fixed-base multiplication and the conversion to
/// affine run in constant time; the scalar goes in through a BIGNUM of fixed width.
mod aws_lc {
    use aws_lc_sys::{
        BN_bin2bn, BN_bn2bin_padded, BN_clear_free, BN_new, EC_POINT_free,
        EC_POINT_get_affine_coordinates_GFp, EC_POINT_mul, EC_POINT_new, EC_group_p256, BIGNUM,
        EC_POINT,
    };
    use std::ptr::{null, null_mut, NonNull};

    /// Frees a BIGNUM (clearing it: one of them holds the nonce) when dropped.
    struct Number(NonNull<BIGNUM>);
    impl Drop for Number {
        fn drop(&mut self) {
            // SAFETY: the pointer came from BN_new/BN_bin2bn and is freed only here.
            unsafe { BN_clear_free(self.0.as_ptr()) }
        }
    }

    struct Point(NonNull<EC_POINT>);
    impl Drop for Point {
        fn drop(&mut self) {
            // SAFETY: the pointer came from EC_POINT_new and is freed only here.
            unsafe { EC_POINT_free(self.0.as_ptr()) }
        }
    }

    pub fn base_point_x(k: &[u8; 32]) -> Option<[u8; 32]> {
        // SAFETY: every pointer passed is either null where the API allows it or owned
        // by a guard above that outlives the call; the output buffer is 32 bytes as
        // BN_bn2bin_padded is told.
        unsafe {
            let group = EC_group_p256();
            if group.is_null() {
                return None;
            }
            let scalar = Number(NonNull::new(BN_bin2bn(k.as_ptr(), k.len(), null_mut()))?);
            let point = Point(NonNull::new(EC_POINT_new(group))?);
            let x = Number(NonNull::new(BN_new())?);
            let ok = EC_POINT_mul(
                group,
                point.0.as_ptr(),
                scalar.0.as_ptr(),
                null(),
                null(),
                null_mut(),
            ) == 1
                && EC_POINT_get_affine_coordinates_GFp(
                    group,
                    point.0.as_ptr(),
                    x.0.as_ptr(),
                    null_mut(),
                    null_mut(),
                ) == 1;
            let mut out = [0u8; 32];
            (ok && BN_bn2bin_padded(out.as_mut_ptr(), out.len(), x.0.as_ptr()) == 1).then_some(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole point: the same bytes as p256's signer, over many keys and messages
    /// (a differing nonce or reduction would show in every signature).
    #[test]
    fn signatures_are_the_p256_crates_to_the_bit() {
        let mut seed = Sha256::digest(b"registryfs es256");
        for round in 0..300u32 {
            seed = Sha256::digest(seed);
            let Ok(key) = SigningKey::from_slice(&seed) else {
                continue;
            };
            let message = format!("{round}: {}", "x".repeat(round as usize * 7));
            assert_eq!(
                sign(&key, message.as_bytes()),
                p256_signature(&key, message.as_bytes()),
                "round {round}"
            );
        }
    }

    #[test]
    fn the_base_point_x_is_p256s() {
        use p256::elliptic_curve::sec1::ToSec1Point;
        use p256::ProjectivePoint;
        for k in [1u64, 2, 3, 0xdead_beef, u64::MAX] {
            let mut bytes = [0u8; 32];
            bytes[24..].copy_from_slice(&k.to_be_bytes());
            let expected = (ProjectivePoint::GENERATOR * Scalar::from(k))
                .to_affine()
                .to_sec1_point(false);
            assert_eq!(
                &aws_lc::base_point_x(&bytes).unwrap()[..],
                &expected.as_bytes()[1..33]
            );
        }
    }
}
