use pmq_core::packing::*;
use rand::{Rng, SeedableRng};

#[test]
fn qweight_round_trips_every_bit_width() {
    let mut r = rand::rngs::StdRng::seed_from_u64(1);
    for bits in [2u32, 3, 4, 8] {
        let (out, inp) = (24, 64);
        let codes: Vec<u8> = (0..out * inp)
            .map(|_| r.random_range(0..(1u32 << bits)) as u8)
            .collect();
        let packed = pack_qweight(&codes, out, inp, bits).unwrap();
        assert_eq!(packed.len(), inp * bits as usize / 32 * out);
        assert_eq!(
            unpack_qweight(&packed, out, inp, bits).unwrap(),
            codes,
            "bits {bits}"
        );
    }
}

#[test]
fn qzeros_round_trip_v1_and_v2() {
    let mut r = rand::rngs::StdRng::seed_from_u64(2);
    for bits in [2u32, 3, 4, 8] {
        let (groups, out) = (5, 96);
        let maxq = (1u32 << bits) - 1;
        let zeros: Vec<u32> = (0..groups * out)
            .map(|_| r.random_range(1..=maxq))
            .collect();
        for f in [CheckpointFormat::V1, CheckpointFormat::V2] {
            let packed = pack_qzeros(&zeros, groups, out, bits, f).unwrap();
            assert_eq!(packed.len(), groups * out * bits as usize / 32);
            assert_eq!(unpack_qzeros(&packed, groups, out, bits, f).unwrap(), zeros);
        }
    }
}

#[test]
fn four_bit_layout_puts_the_lowest_channel_in_the_lowest_bits() {
    // one output, 8 input channels with codes 0..7: one word 0x76543210
    let codes: Vec<u8> = (0..8).collect();
    assert_eq!(pack_qweight(&codes, 1, 8, 4).unwrap(), vec![0x7654_3210]);
    // two outputs: qweight is [in/8, out]; output 1 in the second column
    let codes: Vec<u8> = (0..16).map(|i| if i < 8 { 1 } else { 2 }).collect();
    assert_eq!(
        pack_qweight(&codes, 2, 8, 4).unwrap(),
        vec![0x1111_1111, 0x2222_2222]
    );
    // sym 4-bit zero 8 is stored as 7 in v1
    let z = pack_qzeros(&[8; 8], 1, 8, 4, CheckpointFormat::V1).unwrap();
    assert_eq!(z, vec![0x7777_7777]);
    let z = pack_qzeros(&[8; 8], 1, 8, 4, CheckpointFormat::V2).unwrap();
    assert_eq!(z, vec![0x8888_8888u32 as i32]);
}

#[test]
fn three_bit_codes_straddle_words() {
    // 32 channels of 3 bits = 96 bits = 3 words; channel 10 spans bits 30..33
    let mut codes = vec![0u8; 32];
    codes[10] = 0b111;
    let p = pack_qweight(&codes, 1, 32, 3).unwrap();
    assert_eq!(p, vec![(0b11u32 << 30) as i32, 0b1, 0]);
    codes[31] = 0b101;
    let p = pack_qweight(&codes, 1, 32, 3).unwrap();
    assert_eq!(p[2] as u32, 0b101 << 29);
}

#[test]
fn unrepresentable_inputs_are_errors() {
    let err = pack_qzeros(&[0; 8], 1, 8, 4, CheckpointFormat::V1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("v1") && err.contains("v2"), "{err}");
    assert!(pack_qweight(&[0; 10], 1, 10, 4).is_err()); // 40 bits is not whole words
    assert!(pack_qweight(&[16; 8], 1, 8, 4).is_err());
    assert!(pack_qweight(&[0; 8], 1, 8, 5).is_err());
    assert!(unpack_qweight(&[0; 3], 1, 8, 4).is_err());
}
