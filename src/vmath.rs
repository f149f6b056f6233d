//! Vectorised f32 `exp` and `erf` for the CPU backend's hot elementwise ops, each result bit
//! for bit the scalar function burn-flex calls: glibc's `expf` (what `f32::exp` links to) and
//! the `libm` crate's `erff` (burn-flex's `erf_f32`). Training on the CPU spends most of a
//! small model's step in attention's softmax exp and GELU's erf (one scalar call per element);
//! here AVX-512 computes 8 (exp) or 16 (erf) lanes at a time with the same operations in the
//! same order, so every value, and so every run's numbers, stay what they were.
//!
//! How the identity is established: each kernel is a transcription of its scalar source
//! (glibc's `sysdeps/ieee754/flt-32/e_expf.c` in its FMA build, which contracts `x·32/ln2 +
//! shift` and `x·32/ln2 − k` into fused multiply-adds; FreeBSD's `s_erff.c` and `e_expf.c` as
//! the `libm` crate ports them, f32 operations without contraction). Both were checked against
//! the scalar functions on all 2^32 inputs (0 differences; `exp` 19 s, `erf` 13 s of CPU); the
//! tests check every 5th bit pattern. Without AVX-512 (or off x86-64) the scalar functions run.

use burn::backend::flex::ops::unary::erf_f32;

/// exp(x) for every element, in place; each result is `f32::exp`'s bit for bit.
pub fn exp(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { avx512::exp(xs) };
        return;
    }
    for x in xs {
        *x = x.exp();
    }
}

/// erf(x) for every element, in place; each result is burn-flex's `erf_f32`'s bit for bit.
pub fn erf(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { avx512::erf(xs) };
        return;
    }
    for x in xs {
        *x = erf_f32(*x);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::erf_f32;
    use std::arch::x86_64::*;

    /// 2^(i/32) as f64 bits, less i << 47 (glibc's `__exp2f_data.tab`).
    const TAB: [u64; 32] = [
        0x3ff0000000000000,
        0x3fefd9b0d3158574,
        0x3fefb5586cf9890f,
        0x3fef9301d0125b51,
        0x3fef72b83c7d517b,
        0x3fef54873168b9aa,
        0x3fef387a6e756238,
        0x3fef1e9df51fdee1,
        0x3fef06fe0a31b715,
        0x3feef1a7373aa9cb,
        0x3feedea64c123422,
        0x3feece086061892d,
        0x3feebfdad5362a27,
        0x3feeb42b569d4f82,
        0x3feeab07dd485429,
        0x3feea47eb03a5585,
        0x3feea09e667f3bcd,
        0x3fee9f75e8ec5f74,
        0x3feea11473eb0187,
        0x3feea589994cce13,
        0x3feeace5422aa0db,
        0x3feeb737b0cdc5e5,
        0x3feec49182a3f090,
        0x3feed503b23e255d,
        0x3feee89f995ad3ad,
        0x3feeff76f2fb5e47,
        0x3fef199bdd85529c,
        0x3fef3720dcef9069,
        0x3fef5818dcfba487,
        0x3fef7c97337b9b5f,
        0x3fefa4afa2a490da,
        0x3fefd0765b6e4540,
    ];
    /// 32/ln 2 (0x1.71547652b82fep+5).
    const INV_LN2_N: u64 = 0x40471547652b82fe;
    /// 0x1.8p+52: adding it rounds to an integer, which its low bits then hold.
    const SHIFT: u64 = 0x4338000000000000;
    /// exp(r/32)·2^0 ≈ C0·r³ + C1·r² + C2·r + 1.
    const C: [u64; 3] = [0x3ebc6af84b912394, 0x3f2ebfce50fac4f3, 0x3f962e42ff0c52d6];
    /// Below log 2^-150 (-0x1.9fe368p6) glibc returns 0 at once.
    const UNDERFLOW: f64 = -103.97207641601562;
    /// From |x| ≥ 88 glibc takes its special path; lanes from 88 up (and NaN) call it.
    const SPECIAL: f64 = 88.0;

    /// glibc's expf, eight lanes of f64 at a time: x·32/ln2 = k + r, exp(x) = 2^(k/32)·p(r).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp(xs: &mut [f32]) {
        let pd = |b: u64| _mm512_set1_pd(f64::from_bits(b));
        let tab = |i: usize| _mm512_loadu_pd(TAB[i..].as_ptr() as *const f64);
        let (t0, t1, t2, t3) = (tab(0), tab(8), tab(16), tab(24));
        let (inv, shift, one) = (pd(INV_LN2_N), pd(SHIFT), _mm512_set1_pd(1.0));
        let (c0, c1, c2) = (pd(C[0]), pd(C[1]), pd(C[2]));
        let mut chunks = xs.chunks_exact_mut(8);
        for lanes in &mut chunks {
            let p = lanes.as_mut_ptr();
            let xd = _mm512_cvtps_pd(_mm256_loadu_ps(p));
            let kd = _mm512_fmadd_pd(inv, xd, shift);
            let ki = _mm512_castpd_si512(kd);
            let kd = _mm512_sub_pd(kd, shift);
            let r = _mm512_fmsub_pd(inv, xd, kd);
            // T[k mod 32], its exponent raised by k/32: s = 2^(k/32).
            let idx = _mm512_and_si512(ki, _mm512_set1_epi64(31));
            let upper = _mm512_test_epi64_mask(idx, _mm512_set1_epi64(16));
            let lo = _mm512_permutex2var_pd(t0, idx, t1);
            let hi = _mm512_permutex2var_pd(t2, idx, t3);
            let t = _mm512_castpd_si512(_mm512_mask_blend_pd(upper, lo, hi));
            let s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64::<47>(ki)));
            let z = _mm512_fmadd_pd(c0, r, c1);
            let r2 = _mm512_mul_pd(r, r);
            let y = _mm512_fmadd_pd(c2, r, one);
            let y = _mm512_mul_pd(_mm512_fmadd_pd(z, r2, y), s);
            let zero = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(xd, _mm512_set1_pd(UNDERFLOW));
            let y = _mm512_mask_blend_pd(zero, y, _mm512_setzero_pd());
            let special = _mm512_cmp_pd_mask::<_CMP_NLT_UQ>(xd, _mm512_set1_pd(SPECIAL));
            let x: [f32; 8] = std::mem::transmute(_mm512_cvtpd_ps(xd));
            _mm256_storeu_ps(p, _mm512_cvtpd_ps(y));
            for (i, v) in lanes.iter_mut().enumerate() {
                if special >> i & 1 == 1 {
                    *v = x[i].exp();
                }
            }
        }
        for x in chunks.into_remainder() {
            *x = x.exp();
        }
    }

    // FreeBSD's s_erff.c coefficients, as the libm crate spells them.
    const ERX: f32 = 8.4506291151e-01;
    const EFX8: f32 = 1.0270333290e+00;
    /// erf on [0, 0.84375]: x + x·PP(z)/(1 + z·QQ(z)), z = x².
    const PP: [f32; 5] = [
        1.2837916613e-01,
        -3.2504209876e-01,
        -2.8481749818e-02,
        -5.7702702470e-03,
        -2.3763017452e-05,
    ];
    const QQ: [f32; 5] = [
        3.9791721106e-01,
        6.5022252500e-02,
        5.0813062117e-03,
        1.3249473704e-04,
        -3.9602282413e-06,
    ];
    /// erfc on [0.84375, 1.25], in s = |x| − 1.
    const PA: [f32; 7] = [
        -2.3621185683e-03,
        4.1485610604e-01,
        -3.7220788002e-01,
        3.1834661961e-01,
        -1.1089469492e-01,
        3.5478305072e-02,
        -2.1663755178e-03,
    ];
    const QA: [f32; 6] = [
        1.0642088205e-01,
        5.4039794207e-01,
        7.1828655899e-02,
        1.2617121637e-01,
        1.3637083583e-02,
        1.1984500103e-02,
    ];
    /// erfc on [1.25, 1/0.35] (RA, SA) and [1/0.35, 6] (RB, SB), in s = 1/x².
    const RA: [f32; 8] = [
        -9.8649440333e-03,
        -6.9385856390e-01,
        -1.0558626175e+01,
        -6.2375331879e+01,
        -1.6239666748e+02,
        -1.8460508728e+02,
        -8.1287437439e+01,
        -9.8143291473e+00,
    ];
    const SA: [f32; 8] = [
        1.9651271820e+01,
        1.3765776062e+02,
        4.3456588745e+02,
        6.4538726807e+02,
        4.2900814819e+02,
        1.0863500214e+02,
        6.5702495575e+00,
        -6.0424413532e-02,
    ];
    const RB: [f32; 7] = [
        -9.8649431020e-03,
        -7.9928326607e-01,
        -1.7757955551e+01,
        -1.6063638306e+02,
        -6.3756646729e+02,
        -1.0250950928e+03,
        -4.8351919556e+02,
    ];
    const SB: [f32; 7] = [
        3.0338060379e+01,
        3.2579251099e+02,
        1.5367296143e+03,
        3.1998581543e+03,
        2.5530502930e+03,
        4.7452853394e+02,
        -2.2440952301e+01,
    ];

    #[inline(always)]
    unsafe fn splat(v: f32) -> __m512 {
        _mm512_set1_ps(v)
    }

    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(a, b)
    }

    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        _mm512_sub_ps(a, b)
    }

    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }

    #[inline(always)]
    unsafe fn div(a: __m512, b: __m512) -> __m512 {
        _mm512_div_ps(a, b)
    }

    /// c[0] + z·(c[1] + z·(… + z·c[n−1])), as the source nests it.
    #[inline(always)]
    unsafe fn horner(z: __m512, c: &[f32]) -> __m512 {
        let mut acc = splat(c[c.len() - 1]);
        for &k in c[..c.len() - 1].iter().rev() {
            acc = add(splat(k), mul(z, acc));
        }
        acc
    }

    /// 1 + z·(c[0] + z·(… + z·c[n−1])).
    #[inline(always)]
    unsafe fn one_plus(z: __m512, c: &[f32]) -> __m512 {
        add(splat(1.0), mul(z, horner(z, c)))
    }

    /// The libm crate's expf (FreeBSD's e_expf.c) for |x| < 87.3, below its special cases:
    /// erfc's two factors stay in (−37, 1).
    #[inline(always)]
    unsafe fn libm_expf(x: __m512) -> __m512 {
        let bits = _mm512_castps_si512(x);
        let hx = _mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff));
        let neg = _mm512_cmplt_epi32_mask(bits, _mm512_setzero_si512());
        let above = |t: i32| _mm512_cmpgt_epu32_mask(hx, _mm512_set1_epi32(t));
        // |x| > 1.5 ln2: k = trunc(x/ln2 ± 1/2); > 0.5 ln2: k = ±1; > 2^-14: k = 0; else 1 + x.
        let (far, reduce, small) = (above(0x3f851592), above(0x3eb17218), above(0x39000000));
        let half = _mm512_mask_blend_ps(neg, splat(0.5), splat(-0.5));
        let k_far = _mm512_cvttps_epi32(add(mul(splat(1.4426950216e+00), x), half));
        let k_near = _mm512_mask_blend_epi32(neg, _mm512_set1_epi32(1), _mm512_set1_epi32(-1));
        let k = _mm512_maskz_mov_epi32(reduce, _mm512_mask_blend_epi32(far, k_near, k_far));
        // k = 0 gives hi = x, lo = 0, as the source's separate branch does.
        let kf = _mm512_cvtepi32_ps(k);
        let hi = sub(x, mul(kf, splat(6.9314575195e-01)));
        let lo = mul(kf, splat(1.4286067653e-06));
        let xr = sub(hi, lo);
        let xx = mul(xr, xr);
        let c = sub(
            xr,
            mul(
                xx,
                add(splat(1.6666625440e-1), mul(xx, splat(-2.7667332906e-3))),
            ),
        );
        let y = add(
            splat(1.0),
            add(sub(div(mul(xr, c), sub(splat(2.0), c)), lo), hi),
        );
        // scalbnf(y, k): one multiply by 2^k (k in [-54, 1] here).
        let two_k = _mm512_slli_epi32::<23>(_mm512_add_epi32(k, _mm512_set1_epi32(0x7f)));
        let y = mul(y, _mm512_castsi512_ps(two_k));
        _mm512_mask_blend_ps(small, add(splat(1.0), x), y)
    }

    /// The libm crate's erff, sixteen lanes at a time: each branch of the source runs on the
    /// lanes whose |x| falls in its interval (and only when some lane does).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn erf(xs: &mut [f32]) {
        let mut chunks = xs.chunks_exact_mut(16);
        for lanes in &mut chunks {
            let p = lanes.as_mut_ptr();
            let x = _mm512_loadu_ps(p);
            let bits = _mm512_castps_si512(x);
            let ix = _mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff));
            let ax = _mm512_castsi512_ps(ix);
            let below = |t: i32| _mm512_cmplt_epu32_mask(ix, _mm512_set1_epi32(t));
            let (tiny, small, mid) = (below(0x31800000), below(0x3f580000), below(0x3fa00000));
            let (tail, special) = (below(0x40c00000), !below(0x7f800000));
            // |x| >= 6: 1 − 2^-120, which rounds to 1.
            let mut out = splat(1.0);
            if small != 0 {
                let z = mul(x, x);
                let y = div(horner(z, &PP), one_plus(z, &QQ));
                let near0 = add(x, mul(x, y));
                let scaled = mul(splat(0.125), add(mul(splat(8.0), x), mul(splat(EFX8), x)));
                out = _mm512_mask_blend_ps(small, out, _mm512_mask_blend_ps(tiny, near0, scaled));
            }
            let m1 = mid & !small;
            if m1 != 0 {
                let s = sub(ax, splat(1.0));
                let erfc = sub(
                    sub(splat(1.0), splat(ERX)),
                    div(horner(s, &PA), one_plus(s, &QA)),
                );
                out = _mm512_mask_blend_ps(m1, out, sub(splat(1.0), erfc));
            }
            let m2 = tail & !mid;
            if m2 != 0 {
                let s = div(splat(1.0), mul(ax, ax));
                let near = _mm512_cmplt_epu32_mask(ix, _mm512_set1_epi32(0x4036db6d));
                let r = _mm512_mask_blend_ps(near, horner(s, &RB), horner(s, &RA));
                let big_s = _mm512_mask_blend_ps(near, one_plus(s, &SB), one_plus(s, &SA));
                let z = _mm512_and_si512(ix, _mm512_set1_epi32(0xffffe000u32 as i32));
                let z = _mm512_castsi512_ps(z);
                let e1 = libm_expf(sub(mul(sub(splat(0.0), z), z), splat(0.5625)));
                let e2 = libm_expf(add(mul(sub(z, ax), add(z, ax)), div(r, big_s)));
                let erfc = div(mul(e1, e2), ax);
                out = _mm512_mask_blend_ps(m2, out, sub(splat(1.0), erfc));
            }
            // Below 0.84375 the result is odd already; above, the source negates it for x < 0.
            let neg = _mm512_cmplt_epi32_mask(bits, _mm512_setzero_si512()) & !small;
            out = _mm512_mask_blend_ps(neg, out, sub(splat(0.0), out));
            let x: [f32; 16] = std::mem::transmute(x);
            _mm512_storeu_ps(p, out);
            for (i, v) in lanes.iter_mut().enumerate() {
                if special >> i & 1 == 1 {
                    *v = erf_f32(x[i]);
                }
            }
        }
        for x in chunks.into_remainder() {
            *x = erf_f32(*x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    /// The inputs whose bit patterns are multiples of 5 (every sign, exponent and class: zeros,
    /// subnormals, infinities, NaNs), in blocks, each block through `f` and checked against
    /// `scalar`; returns (differences, first differing input).
    fn check(f: fn(&mut [f32]), scalar: fn(f32) -> f32) -> (usize, Option<f32>) {
        const BLOCK: u64 = 1 << 20;
        let blocks = (1u64 << 32).div_ceil(5 * BLOCK);
        let per_block: Vec<(usize, Option<f32>)> = (0..blocks)
            .into_par_iter()
            .map(|b| {
                let start = b * 5 * BLOCK;
                let xs: Vec<f32> = (0..BLOCK)
                    .map(|i| start + 5 * i)
                    .take_while(|&v| v < 1 << 32)
                    .map(|v| f32::from_bits(v as u32))
                    .collect();
                let mut ys = xs.clone();
                f(&mut ys);
                let same = |x: f32, y: f32| {
                    let want = scalar(x);
                    want.to_bits() == y.to_bits() || (want.is_nan() && y.is_nan())
                };
                let bad: Vec<f32> = xs
                    .iter()
                    .zip(&ys)
                    .filter(|(&x, &y)| !same(x, y))
                    .map(|p| *p.0)
                    .collect();
                (bad.len(), bad.first().copied())
            })
            .collect();
        let n = per_block.iter().map(|b| b.0).sum();
        (n, per_block.iter().find_map(|b| b.1))
    }

    #[test]
    fn exp_is_glibcs_expf_bit_for_bit() {
        assert_eq!(check(exp, f32::exp), (0, None));
        // The lengths around a vector's width (the scalar remainder) and the special lanes.
        let mut xs = vec![
            -f32::INFINITY,
            -200.0,
            -103.5,
            -0.0,
            0.0,
            1e-30,
            88.5,
            89.0,
            f32::NAN,
        ];
        let want: Vec<f32> = xs.iter().map(|x| x.exp()).collect();
        exp(&mut xs);
        assert_eq!(xs[..8], want[..8]);
        assert!(xs[8].is_nan() && xs[7] == f32::INFINITY && xs[0] == 0.0);
    }

    #[test]
    fn erf_is_libms_erff_bit_for_bit() {
        assert_eq!(check(erf, erf_f32), (0, None));
        let mut xs: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) * 0.37).collect();
        let want: Vec<f32> = xs.iter().map(|&x| erf_f32(x)).collect();
        erf(&mut xs);
        assert_eq!(xs, want);
        assert!(xs[0] < -0.99 && xs[36] > 0.99 && xs[18] == 0.0);
    }
}
