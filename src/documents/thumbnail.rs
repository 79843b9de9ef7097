//! Thumbnails of images: decoded with limits (dimensions checked before decoding, and a cap
//! on what decoding may allocate) so a decompression bomb is refused rather than decoded,
//! resized with fast_image_resize, written as JPEG. CPU-bound: callers run it on the
//! blocking pool.

use std::io::Cursor;

use fast_image_resize::{ResizeOptions, Resizer};
use image::{DynamicImage, ImageReader, Limits, codecs::jpeg::JpegEncoder};

/// The longer side of a thumbnail, in pixels.
pub const SIDE: u32 = 256;
/// Images larger than this (bytes) get no thumbnail.
pub const MAX_SOURCE_BYTES: u64 = 64 * 1024 * 1024;
/// The most a decode may allocate.
const MAX_ALLOC: u64 = 512 * 1024 * 1024;
const QUALITY: u8 = 80;

/// The size of a thumbnail of a `w`×`h` image: the longer side [`SIDE`], the aspect kept,
/// never larger than the image.
pub fn fit(w: u32, h: u32) -> (u32, u32) {
    let (w, h) = (w.max(1), h.max(1));
    if w <= SIDE && h <= SIDE {
        return (w, h);
    }
    if w >= h {
        (SIDE, ((u64::from(h) * u64::from(SIDE)) / u64::from(w)).max(1) as u32)
    } else {
        (((u64::from(w) * u64::from(SIDE)) / u64::from(h)).max(1) as u32, SIDE)
    }
}

/// A JPEG thumbnail of the image in `bytes`, or why none can be made. Images of more than
/// `max_pixels` pixels are refused before anything is decoded.
pub fn make(bytes: &[u8], max_pixels: u64) -> Result<Vec<u8>, String> {
    let reader = || ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| e.to_string());
    let (w, h) = reader()?.into_dimensions().map_err(|e| e.to_string())?;
    if u64::from(w) * u64::from(h) > max_pixels {
        return Err(format!("the image is {w}×{h} pixels, more than the {max_pixels} decoded"));
    }
    let mut r = reader()?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_ALLOC);
    r.limits(limits);
    let src = DynamicImage::ImageRgb8(r.decode().map_err(|e| e.to_string())?.to_rgb8());
    let (tw, th) = fit(w, h);
    let mut dst = DynamicImage::ImageRgb8(image::RgbImage::new(tw, th));
    Resizer::new().resize(&src, &mut dst, &ResizeOptions::new()).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(16 * 1024);
    JpegEncoder::new_with_quality(&mut out, QUALITY).encode_image(&dst).map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_keep_the_aspect_and_never_grow() {
        assert_eq!(fit(1024, 512), (256, 128));
        assert_eq!(fit(300, 3000), (25, 256));
        assert_eq!(fit(100, 50), (100, 50));
        assert_eq!(fit(100_000, 1), (256, 1));
    }

    #[test]
    fn a_png_becomes_a_small_jpeg_and_a_bomb_is_refused() {
        let img = image::RgbImage::from_fn(600, 400, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 99]));
        let mut png = Vec::new();
        DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).unwrap_or_default();
        let jpeg = make(&png, 40_000_000).unwrap_or_default();
        let thumb = image::load_from_memory(&jpeg).map(|i| (i.width(), i.height()));
        assert_eq!(thumb.ok(), Some((256, 170)));
        assert!(make(&png, 1000).is_err(), "over the pixel limit");
        assert!(make(b"not an image", 1000).is_err());
    }
}
