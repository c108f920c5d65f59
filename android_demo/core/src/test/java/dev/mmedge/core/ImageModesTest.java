package dev.mmedge.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.mmedge.core.testing.Golden;

import java.awt.image.BufferedImage;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.zip.CRC32;
import java.util.zip.Deflater;
import javax.imageio.ImageIO;
import org.junit.Assume;
import org.junit.Test;

/**
 * tests/vectors/golden/image-modes.json (scripts/make_image_mode_vectors.py, from the Python
 * runtime's decoder): each pixel format an app may decode (grey, grey+alpha, palette with and
 * without transparency, 16-bit, 1-bit, EXIF orientations 1..8, CMYK) through ImageFiles and the
 * Preprocessor: the 8-bit RGB after orientation, conversion and compositing, and the resized image,
 * bit for bit; CMYK refused.
 */
public class ImageModesTest {
    private static byte[] rgbBytes(int[] rgb) {
        byte[] out = new byte[rgb.length];
        for (int i = 0; i < out.length; i++) out[i] = (byte) rgb[i];
        return out;
    }

    @Test
    public void everyModeAsThePythonRuntime() throws Exception {
        Path file = Golden.golden().resolve("image-modes.json");
        Assume.assumeTrue("tests/vectors/golden/image-modes.json is not there", Files.isRegularFile(file));
        Map<String, Object> doc = Golden.json(file);
        assertEquals("mmedge-image-modes-1", doc.get("format"));
        int[] pad = Golden.ints(doc.get("pad_color"));
        int size = (int) Json.lng(doc.get("image_size"));
        Preprocessor pre = new Preprocessor(size, pad, new double[] {0.5, 0.5, 0.5}, new double[] {0.5, 0.5, 0.5}, 1.0 / 255);
        int decoded = 0;
        int refused = 0;
        List<Object> images = Json.arr(doc.get("images"));
        assertTrue(images.size() >= 10);
        for (Object o : images) {
            Map<String, Object> c = Json.obj(o);
            String name = (String) c.get("file");
            byte[] data = Files.readAllBytes(Golden.golden().resolve(name));
            if (Boolean.TRUE.equals(c.get("refused"))) {
                try {
                    ImageFiles.decode(data);
                    fail(name + " decoded; expected an ImageException");
                } catch (ImageException expected) {
                    assertEquals(name, c.get("message"), expected.getMessage());
                }
                try {
                    ImageFiles.check(data); // what the app calls before BitmapFactory
                    fail(name + " passed the check");
                } catch (ImageException expected) {
                    refused++;
                }
                continue;
            }
            ImageFiles.Decoded im = ImageFiles.decode(data);
            assertEquals(name + " width", Json.lng(c.get("width")), im.width);
            assertEquals(name + " height", Json.lng(c.get("height")), im.height);
            assertEquals(name + ": 8-bit RGB after orientation, conversion and compositing", c.get("rgb_sha256"),
                    IO.sha256Hex(rgbBytes(Preprocessor.toRgb(im.argb, pad))));
            assertEquals(name + ": resized", c.get("resized_rgb_sha256"),
                    IO.sha256Hex(pre.run(im.argb, im.width, im.height).resizedBytes()));
            decoded++;
        }
        System.out.println("# image modes (Java core): " + decoded + " decoded bit-identical, " + refused + " refused, of "
                + images.size());
    }

    /** The shipped golden images: the core's PNG decoder gives ImageIO's ARGB for 8-bit RGB / RGBA files. */
    @Test
    public void pngDecoderAgreesWithImageIoOnRgbAndRgba() throws Exception {
        int checked = 0;
        try (java.nio.file.DirectoryStream<Path> dir = Files.newDirectoryStream(Golden.golden().resolve("images"), "*.png")) {
            for (Path p : dir) {
                byte[] data = Files.readAllBytes(p);
                PngDecoder.Result png = PngDecoder.decode(data);
                if (png.bitDepth != 8 || (png.colourType != 2 && png.colourType != 6)) continue;
                BufferedImage im = ImageIO.read(new ByteArrayInputStream(data));
                int[] argb = im.getRGB(0, 0, im.getWidth(), im.getHeight(), null, 0, im.getWidth());
                assertArrayEquals(p.toString(), argb, png.argb);
                checked++;
            }
        }
        assertTrue(checked >= 5);
    }

    // ------------------------------------------------------------------ hand-made PNGs
    private static byte[] chunk(String type, byte[] data) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        byte[] t = type.getBytes(java.nio.charset.StandardCharsets.ISO_8859_1);
        out.write(data.length >>> 24);
        out.write(data.length >>> 16);
        out.write(data.length >>> 8);
        out.write(data.length);
        out.write(t, 0, 4);
        out.write(data, 0, data.length);
        CRC32 crc = new CRC32();
        crc.update(t);
        crc.update(data);
        long v = crc.getValue();
        out.write((int) (v >>> 24));
        out.write((int) (v >>> 16));
        out.write((int) (v >>> 8));
        out.write((int) v);
        return out.toByteArray();
    }

    private static byte[] png(int w, int h, int depth, int colourType, int interlace, byte[] rawRows, byte[]... extra) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.write(PngDecoder.SIGNATURE, 0, 8);
        byte[] ihdr = {(byte) (w >>> 24), (byte) (w >>> 16), (byte) (w >>> 8), (byte) w, (byte) (h >>> 24), (byte) (h >>> 16),
            (byte) (h >>> 8), (byte) h, (byte) depth, (byte) colourType, 0, 0, (byte) interlace};
        byte[] c = chunk("IHDR", ihdr);
        out.write(c, 0, c.length);
        for (byte[] e : extra) out.write(e, 0, e.length);
        Deflater deflater = new Deflater();
        deflater.setInput(rawRows);
        deflater.finish();
        byte[] buf = new byte[rawRows.length + 64];
        int n = deflater.deflate(buf);
        deflater.end();
        c = chunk("IDAT", java.util.Arrays.copyOf(buf, n));
        out.write(c, 0, c.length);
        c = chunk("IEND", new byte[0]);
        out.write(c, 0, c.length);
        return out.toByteArray();
    }

    @Test
    public void filtersInterlacingAndCorruptFiles() throws Exception {
        // 2 x 2 RGB, one row with each of two filters: Sub, then Paeth
        byte[] rows = {1, 10, 20, 30, 5, 5, 5, 4, 1, 1, 1, 2, 2, 2};
        PngDecoder.Result r = PngDecoder.decode(png(2, 2, 8, 2, 0, rows));
        assertEquals(0xff0a141e, r.argb[0]);
        assertEquals(0xff0f1923, r.argb[1]); // Sub: (10+5, 20+5, 30+5)
        // Paeth on row 2: first pixel predicts from above (10,20,30) -> (11,21,31); second from paeth(left, up, upleft)
        assertEquals(0xff0b151f, r.argb[2]);
        assertEquals(0xff111b25, r.argb[3]);
        // 4-bit grey, 2 x 1: values 1 and 15 -> 17 and 255
        r = PngDecoder.decode(png(2, 1, 4, 0, 0, new byte[] {0, 0x1f}));
        assertArrayEquals(new int[] {0xff111111, 0xffffffff}, r.argb);
        // Adam7 interlaced 3 x 3 8-bit grey: passes 1 (0,0), 2 none (x0 4), 3 none, 4 (2,0), 5 (0,2),(2,2), 6 (1,0),(1,2), 7 row 1
        byte[] interlaced = {0, 1, /* pass 4 */ 0, 3, /* pass 5 */ 0, 7, 9, /* pass 6 */ 0, 2, 0, 8, /* pass 7 */ 0, 4, 5, 6};
        r = PngDecoder.decode(png(3, 3, 8, 0, 1, interlaced));
        for (int i = 0; i < 9; i++) assertEquals("pixel " + i, 0xff000000 | (i + 1) * 0x010101, r.argb[i]);
        // corrupt: a flipped CRC, truncated data, excess data, an unknown critical chunk
        byte[] good = png(2, 1, 4, 0, 0, new byte[] {0, 0x1f});
        byte[] flipped = good.clone();
        flipped[20] ^= 1;
        byte[][] bad = {flipped, java.util.Arrays.copyOf(good, good.length - 20), png(2, 1, 4, 0, 0, new byte[] {0, 0x1f, 0, 0}),
            png(2, 1, 4, 0, 0, new byte[] {0, 0x1f}, chunk("ABCD", new byte[0])), png(2, 1, 4, 0, 0, new byte[] {0}),
            png(2, 1, 3, 0, 0, new byte[] {0, 0}), new byte[] {1, 2, 3}};
        for (byte[] b : bad) {
            try {
                ImageFiles.decode(b);
                fail("decoded a corrupt PNG");
            } catch (ImageException expected) {
                // refused
            }
        }
        // ancillary chunks are ignored; a too-large image is refused before allocating
        PngDecoder.decode(png(2, 1, 4, 0, 0, new byte[] {0, 0x1f}, chunk("gAMA", new byte[] {0, 0, (byte) 0xb1, (byte) 0x8f})));
        try {
            PngDecoder.decode(png(100000, 100000, 8, 0, 0, new byte[] {0}));
            fail();
        } catch (ImageException expected) {
            assertTrue(expected.getMessage().contains("pixels"));
        }
    }

    @Test
    public void exifOrientationOfJpegAndWebp() {
        // a TIFF with Orientation 6, little-endian, behind "Exif\0\0"
        byte[] tiff = {'E', 'x', 'i', 'f', 0, 0, 'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0,
            0, 0, 0, 0};
        ByteArrayOutputStream jpeg = new ByteArrayOutputStream();
        jpeg.write(0xff);
        jpeg.write(0xd8);
        jpeg.write(0xff);
        jpeg.write(0xe1);
        jpeg.write((tiff.length + 2) >>> 8);
        jpeg.write(tiff.length + 2);
        jpeg.write(tiff, 0, tiff.length);
        byte[] sof = {(byte) 0xff, (byte) 0xc0, 0, 11, 8, 0, 9, 0, 12, 1, 1, 0x11, 0, (byte) 0xff, (byte) 0xda};
        jpeg.write(sof, 0, sof.length);
        byte[] j = jpeg.toByteArray();
        assertEquals("jpeg", ImageFiles.format(j));
        assertEquals(6, ImageFiles.exifOrientation(j));
        ImageFiles.check(j); // one component: grey, accepted
        byte[] cmyk = j.clone();
        cmyk[cmyk.length - 6] = 4; // four components
        try {
            ImageFiles.check(cmyk);
            fail("CMYK accepted");
        } catch (ImageException expected) {
            assertEquals(ImageFiles.CMYK_REFUSED, expected.getMessage());
        }
        ByteArrayOutputStream webp = new ByteArrayOutputStream();
        byte[] head = {'R', 'I', 'F', 'F', 0, 0, 0, 0, 'W', 'E', 'B', 'P', 'V', 'P', '8', 'X', 10, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 'E', 'X', 'I', 'F', (byte) tiff.length, 0, 0, 0};
        webp.write(head, 0, head.length);
        webp.write(tiff, 0, tiff.length);
        byte[] w = webp.toByteArray();
        assertEquals("webp", ImageFiles.format(w));
        assertEquals(6, ImageFiles.exifOrientation(w));
        assertEquals(0, ImageFiles.exifOrientation(new byte[] {0, 0, 0, 0x20, 'f', 't', 'y', 'p'})); // HEIF: the platform's job
        assertEquals(1, ImageFiles.exifOrientation(new byte[] {(byte) 0xff, (byte) 0xd8, (byte) 0xff, (byte) 0xe1, 0}));
    }

    @Test
    public void orientationsMoveThePixels() {
        // 3 x 2: a b c / d e f
        int[] px = {1, 2, 3, 4, 5, 6};
        ImageFiles.Decoded in = new ImageFiles.Decoded(px, 3, 2);
        int[][] want = {null, px, {3, 2, 1, 6, 5, 4}, {6, 5, 4, 3, 2, 1}, {4, 5, 6, 1, 2, 3}, {1, 4, 2, 5, 3, 6},
            {4, 1, 5, 2, 6, 3}, {6, 3, 5, 2, 4, 1}, {3, 6, 2, 5, 1, 4}};
        for (int o = 1; o <= 8; o++) {
            ImageFiles.Decoded out = ImageFiles.orient(in, o);
            assertArrayEquals("orientation " + o, want[o], out.argb);
            assertEquals(o >= 5 ? 2 : 3, out.width);
        }
    }
}
