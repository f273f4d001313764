//! Feature extraction from WAV audio: pure functions over decoded samples.
//!
//! Conventions:
//! - Levels are dBFS with 1.0 as full scale: `20·log10(x)` of the RMS and of
//!   the peak, over every sample of every channel. A full-scale sine reads
//!   0 dBFS peak and −3.01 dBFS RMS. Digital silence reads the floor,
//!   [`FLOOR_DBFS`].
//! - The silence ratio is the share of 20 ms frames whose RMS is below
//!   [`SILENCE_DBFS`].
//! - Zero-crossing rate is the share of adjacent sample pairs that change
//!   sign, on the channels' average.
//! - The spectrum is Welch's average over the channels' average with its DC
//!   offset removed: Hann-windowed frames of up to 8192 samples with half
//!   overlap, the last frame ending at the last sample, each frame
//!   zero-padded to a power of two. The dominant frequency is its strongest
//!   bin above the DC lobe, refined by parabolic interpolation of the log
//!   power; the spectral centroid is the magnitude-weighted mean frequency.

use std::borrow::Cow;
use std::io::Cursor;

use realfft::RealFftPlanner;

use crate::error::Error;

/// The level reported for digital silence.
pub const FLOOR_DBFS: f64 = -120.0;
/// Frames quieter than this count as silent.
pub const SILENCE_DBFS: f64 = -60.0;
const SILENCE_FRAME_SECONDS: f64 = 0.020;
const MAX_FFT_LEN: usize = 8192;
const MIN_SPECTRUM_SAMPLES: usize = 64;

/// The features of one clip.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Length in seconds.
    pub duration_seconds: f64,
    /// Samples per second per channel.
    pub sample_rate_hz: u32,
    /// Channel count.
    pub channels: u16,
    /// Bits per stored sample.
    pub bits_per_sample: u16,
    /// `int` or `float`.
    pub sample_format: &'static str,
    /// RMS level.
    pub rms_dbfs: f64,
    /// Peak level.
    pub peak_dbfs: f64,
    /// Share of silent 20 ms frames, in [0, 1].
    pub silence_ratio: f64,
    /// Share of sign changes between adjacent samples, in [0, 1].
    pub zero_crossing_rate: f64,
    /// Magnitude-weighted mean frequency; `None` for silence or tiny clips.
    pub spectral_centroid_hz: Option<f64>,
    /// Strongest frequency; `None` for silence or tiny clips.
    pub dominant_frequency_hz: Option<f64>,
}

/// Decodes a WAV file and extracts its features.
pub fn analyse_wav(bytes: &[u8]) -> Result<Features, Error> {
    let mut reader = hound::WavReader::new(Cursor::new(bytes))?;
    let spec = reader.spec();
    if spec.sample_rate == 0 {
        return Err(Error::Unsupported("a sample rate of 0 Hz".to_owned()));
    }
    let supported = match spec.sample_format {
        hound::SampleFormat::Int => (8..=32).contains(&spec.bits_per_sample),
        hound::SampleFormat::Float => spec.bits_per_sample == 32,
    };
    if !supported {
        return Err(Error::Unsupported(format!(
            "{} bits per {:?} sample",
            spec.bits_per_sample, spec.sample_format
        )));
    }
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>()?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1_i64 << (spec.bits_per_sample - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|s| s as f32 * scale))
                .collect::<Result<_, _>>()?
        }
    };
    let channels = usize::from(spec.channels.max(1));
    if samples.len() < channels {
        return Err(Error::Empty);
    }
    let mono = downmix(&samples, channels);
    let rate = f64::from(spec.sample_rate);
    let (spectral_centroid_hz, dominant_frequency_hz) = spectrum_features(&mono, rate);
    Ok(Features {
        duration_seconds: mono.len() as f64 / rate,
        sample_rate_hz: spec.sample_rate,
        channels: spec.channels,
        bits_per_sample: spec.bits_per_sample,
        sample_format: match spec.sample_format {
            hound::SampleFormat::Float => "float",
            hound::SampleFormat::Int => "int",
        },
        rms_dbfs: dbfs(rms(&samples)),
        peak_dbfs: dbfs(
            samples
                .iter()
                .fold(0.0_f64, |m, s| m.max(f64::from(s.abs()))),
        ),
        silence_ratio: silence_ratio(&mono, rate),
        zero_crossing_rate: zero_crossing_rate(&mono),
        spectral_centroid_hz,
        dominant_frequency_hz,
    })
}

/// The channels' average; mono is borrowed, not copied.
fn downmix(samples: &[f32], channels: usize) -> Cow<'_, [f32]> {
    if channels == 1 {
        return Cow::Borrowed(samples);
    }
    let scale = 1.0 / channels as f32;
    Cow::Owned(
        samples
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() * scale)
            .collect(),
    )
}

fn rms(samples: &[f32]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt()
}

fn dbfs(level: f64) -> f64 {
    if level > 0.0 {
        (20.0 * level.log10()).max(FLOOR_DBFS)
    } else {
        FLOOR_DBFS
    }
}

fn silence_ratio(mono: &[f32], rate: f64) -> f64 {
    let frame = ((rate * SILENCE_FRAME_SECONDS) as usize).max(1);
    let (silent, total) = mono
        .chunks(frame)
        .fold((0_usize, 0_usize), |(s, t), chunk| {
            (s + usize::from(dbfs(rms(chunk)) < SILENCE_DBFS), t + 1)
        });
    if total == 0 {
        0.0
    } else {
        silent as f64 / total as f64
    }
}

fn zero_crossing_rate(mono: &[f32]) -> f64 {
    if mono.len() < 2 {
        return 0.0;
    }
    let crossings = mono
        .windows(2)
        .filter(|pair| (pair[0] >= 0.0) != (pair[1] >= 0.0))
        .count();
    crossings as f64 / (mono.len() - 1) as f64
}

/// Returns (spectral centroid, dominant frequency), both in Hz.
fn spectrum_features(mono: &[f32], rate: f64) -> (Option<f64>, Option<f64>) {
    if mono.len() < MIN_SPECTRUM_SAMPLES {
        return (None, None);
    }
    let (power, fft_len) = welch_power(mono);
    let bin_hz = rate / fft_len as f64;
    // Bins inside the Hann window's main lobe around DC hold what is left of
    // the offset, not a tone.
    let dc_lobe = 2 * fft_len / mono.len().min(MAX_FFT_LEN);

    let (peak, &peak_power) = match power
        .iter()
        .enumerate()
        .skip(dc_lobe.max(1))
        .max_by(|a, b| a.1.total_cmp(b.1))
    {
        Some(found) if *found.1 > f64::EPSILON * power[0].max(1e-30) => found,
        _ => return (None, None),
    };
    let offset = if peak + 1 < power.len() {
        let (a, b, c) = (
            power[peak - 1].max(f64::MIN_POSITIVE).ln(),
            peak_power.ln(),
            power[peak + 1].max(f64::MIN_POSITIVE).ln(),
        );
        let denominator = a - 2.0 * b + c;
        if denominator.abs() > f64::EPSILON {
            (0.5 * (a - c) / denominator).clamp(-0.5, 0.5)
        } else {
            0.0
        }
    } else {
        0.0
    };
    let dominant = (peak as f64 + offset) * bin_hz;

    let (weighted, total) = power
        .iter()
        .enumerate()
        .fold((0.0, 0.0), |(w, t), (k, &p)| {
            let magnitude = p.sqrt();
            (w + k as f64 * bin_hz * magnitude, t + magnitude)
        });
    (Some(weighted / total), Some(dominant))
}

/// The average power spectrum of Hann-windowed, half-overlapping frames of
/// the signal less its mean, and the FFT length it was computed with.
fn welch_power(mono: &[f32]) -> (Vec<f64>, usize) {
    let frame_len = mono.len().min(MAX_FFT_LEN);
    let fft_len = frame_len.next_power_of_two();
    let hop = (frame_len / 2).max(1);
    let mean = (mono.iter().map(|&s| f64::from(s)).sum::<f64>() / mono.len() as f64) as f32;
    let window: Vec<f32> = (0..frame_len)
        .map(|i| {
            let phase = 2.0 * std::f64::consts::PI * i as f64 / frame_len as f64;
            (0.5 - 0.5 * phase.cos()) as f32
        })
        .collect();
    let fft = RealFftPlanner::<f32>::new().plan_fft_forward(fft_len);
    let mut frame = fft.make_input_vec();
    let mut spectrum = fft.make_output_vec();
    let mut scratch = fft.make_scratch_vec();
    let mut power = vec![0.0_f64; spectrum.len()];
    let mut frames = 0_u32;

    // Full frames only: the last one ends exactly at the last sample.
    let last = mono.len() - frame_len;
    let mut starts: Vec<usize> = (0..=last).step_by(hop).collect();
    if starts.last() != Some(&last) {
        starts.push(last);
    }
    for start in starts {
        let samples = &mono[start..start + frame_len];
        for ((slot, &sample), &w) in frame.iter_mut().zip(samples).zip(&window) {
            *slot = (sample - mean) * w;
        }
        frame[frame_len..].iter_mut().for_each(|slot| *slot = 0.0);
        if fft
            .process_with_scratch(&mut frame, &mut spectrum, &mut scratch)
            .is_ok()
        {
            for (p, x) in power.iter_mut().zip(&spectrum) {
                *p += f64::from(x.norm_sqr());
            }
            frames += 1;
        }
    }
    let scale = 1.0 / f64::from(frames.max(1));
    power.iter_mut().for_each(|p| *p *= scale);
    (power, fft_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(rate: u32, channels: u16, samples: &[f32]) -> Vec<u8> {
        encode(rate, channels, 16, hound::SampleFormat::Int, samples)
    }

    fn encode(
        rate: u32,
        channels: u16,
        bits: u16,
        format: hound::SampleFormat,
        samples: &[f32],
    ) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: format,
        };
        let mut bytes = Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut bytes, spec).unwrap();
        let full_scale = ((1_i64 << (bits - 1)) - 1) as f64;
        for &s in samples {
            match (format, bits) {
                (hound::SampleFormat::Float, _) => writer.write_sample(s).unwrap(),
                (_, 8) => writer
                    .write_sample((f64::from(s) * full_scale).round() as i8)
                    .unwrap(),
                (_, 16) => writer
                    .write_sample((f64::from(s) * full_scale).round() as i16)
                    .unwrap(),
                _ => writer
                    .write_sample((f64::from(s) * full_scale).round() as i32)
                    .unwrap(),
            }
        }
        writer.finalize().unwrap();
        bytes.into_inner()
    }

    fn sine(freq: f64, rate: u32, seconds: f64, amplitude: f64) -> Vec<f32> {
        let count = (f64::from(rate) * seconds) as usize;
        (0..count)
            .map(|i| {
                (amplitude * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin())
                    as f32
            })
            .collect()
    }

    #[test]
    fn a_440_hz_sine_is_measured_as_such() {
        let features = analyse_wav(&wav(16_000, 1, &sine(440.0, 16_000, 1.0, 0.5))).unwrap();
        let dominant = features.dominant_frequency_hz.unwrap();
        assert!((dominant - 440.0).abs() < 1.0, "dominant {dominant}");
        assert!((features.duration_seconds - 1.0).abs() < 1e-9);
        assert_eq!(features.sample_rate_hz, 16_000);
        assert_eq!(features.channels, 1);
        // Half scale: peak −6.02 dBFS, RMS 3.01 dB lower.
        assert!(
            (features.peak_dbfs + 6.02).abs() < 0.05,
            "{}",
            features.peak_dbfs
        );
        assert!(
            (features.rms_dbfs + 9.03).abs() < 0.05,
            "{}",
            features.rms_dbfs
        );
        // Two crossings per period.
        assert!((features.zero_crossing_rate - 880.0 / 16_000.0).abs() < 0.001);
        assert!(features.silence_ratio < 1e-9);
        let centroid = features.spectral_centroid_hz.unwrap();
        assert!((centroid - 440.0).abs() < 60.0, "centroid {centroid}");
    }

    #[test]
    fn off_bin_frequencies_are_interpolated() {
        for freq in [97.3, 1234.5, 5001.0] {
            let features = analyse_wav(&wav(44_100, 1, &sine(freq, 44_100, 0.5, 0.8))).unwrap();
            let dominant = features.dominant_frequency_hz.unwrap();
            assert!(
                (dominant - freq).abs() < 2.0,
                "{freq} measured as {dominant}"
            );
        }
    }

    #[test]
    fn stereo_is_analysed_on_the_channels_average() {
        let tone = sine(1000.0, 8_000, 0.25, 0.5);
        let interleaved: Vec<f32> = tone.iter().flat_map(|&s| [s, s]).collect();
        let features = analyse_wav(&wav(8_000, 2, &interleaved)).unwrap();
        assert_eq!(features.channels, 2);
        assert!((features.duration_seconds - 0.25).abs() < 1e-9);
        assert!((features.dominant_frequency_hz.unwrap() - 1000.0).abs() < 2.0);
    }

    #[test]
    fn silence_reads_the_floor_and_has_no_spectrum() {
        let features = analyse_wav(&wav(8_000, 1, &vec![0.0; 8_000])).unwrap();
        assert_eq!(features.rms_dbfs, FLOOR_DBFS);
        assert_eq!(features.peak_dbfs, FLOOR_DBFS);
        assert_eq!(features.silence_ratio, 1.0);
        assert_eq!(features.dominant_frequency_hz, None);
    }

    #[test]
    fn half_silent_audio_has_a_silence_ratio_of_a_half() {
        let mut samples = sine(300.0, 8_000, 0.5, 0.5);
        samples.extend(std::iter::repeat_n(0.0, 4_000));
        let features = analyse_wav(&wav(8_000, 1, &samples)).unwrap();
        assert!(
            (features.silence_ratio - 0.5).abs() < 0.03,
            "{}",
            features.silence_ratio
        );
    }

    #[test]
    fn every_pcm_depth_and_float_reads_the_same_tone() {
        let tone = sine(440.0, 16_000, 0.5, 0.5);
        for (bits, format) in [
            (8, hound::SampleFormat::Int),
            (16, hound::SampleFormat::Int),
            (24, hound::SampleFormat::Int),
            (32, hound::SampleFormat::Int),
            (32, hound::SampleFormat::Float),
        ] {
            let features = analyse_wav(&encode(16_000, 1, bits, format, &tone)).unwrap();
            let dominant = features.dominant_frequency_hz.unwrap();
            assert!(
                (dominant - 440.0).abs() < 1.0,
                "{bits}-bit {format:?}: {dominant}"
            );
            assert!(
                (features.peak_dbfs + 6.02).abs() < 0.2,
                "{bits}-bit {format:?}: {}",
                features.peak_dbfs
            );
            assert_eq!(features.bits_per_sample, bits);
        }
    }

    #[test]
    fn a_dc_offset_does_not_hide_the_tone() {
        let tone: Vec<f32> = sine(440.0, 16_000, 1.0, 0.4)
            .iter()
            .map(|s| s + 0.3)
            .collect();
        let features = analyse_wav(&wav(16_000, 1, &tone)).unwrap();
        let dominant = features.dominant_frequency_hz.unwrap();
        assert!((dominant - 440.0).abs() < 1.0, "dominant {dominant}");
        let centroid = features.spectral_centroid_hz.unwrap();
        assert!((centroid - 440.0).abs() < 60.0, "centroid {centroid}");
    }

    #[test]
    fn a_constant_signal_has_no_dominant_frequency() {
        let features = analyse_wav(&wav(8_000, 1, &vec![0.25; 8_000])).unwrap();
        assert_eq!(features.dominant_frequency_hz, None);
    }

    #[test]
    fn lengths_that_are_not_powers_of_two_keep_the_centroid_on_the_tone() {
        for len in [4_097, 8_193, 12_300, 20_000] {
            let tone: Vec<f32> = sine(1000.0, 16_000, 2.0, 0.5)
                .into_iter()
                .take(len)
                .collect();
            let features = analyse_wav(&wav(16_000, 1, &tone)).unwrap();
            let centroid = features.spectral_centroid_hz.unwrap();
            assert!(
                (centroid - 1000.0).abs() < 60.0,
                "{len} samples: centroid {centroid}"
            );
            let dominant = features.dominant_frequency_hz.unwrap();
            assert!(
                (dominant - 1000.0).abs() < 2.0,
                "{len} samples: dominant {dominant}"
            );
        }
    }

    #[test]
    fn a_zero_sample_rate_is_unsupported() {
        let mut bytes = wav(8_000, 1, &sine(440.0, 8_000, 0.1, 0.5));
        // The sample rate sits at byte 24 of a canonical header.
        bytes[24..28].copy_from_slice(&0_u32.to_le_bytes());
        assert!(matches!(
            analyse_wav(&bytes),
            Err(Error::Unsupported(_) | Error::Undecodable(_))
        ));
    }

    #[test]
    fn bytes_that_are_not_wav_are_undecodable() {
        assert!(matches!(
            analyse_wav(b"ID3\x04 definitely not a wav file"),
            Err(Error::Undecodable(_))
        ));
    }

    #[test]
    fn a_wav_without_samples_is_empty() {
        assert!(matches!(
            analyse_wav(&wav(8_000, 1, &[])),
            Err(Error::Empty)
        ));
    }
}
