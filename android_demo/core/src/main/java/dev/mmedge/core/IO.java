package dev.mmedge.core;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/** Small byte helpers (Java 8 and Android API 26 have no InputStream.readAllBytes). */
public final class IO {
    private IO() {
    }

    /** Every byte of a stream, at most `limit` (IOException beyond). */
    public static byte[] readAll(InputStream in, int limit) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        byte[] buf = new byte[1 << 16];
        int n;
        while ((n = in.read(buf)) > 0) {
            out.write(buf, 0, n);
            if (out.size() > limit) throw new IOException("more than " + limit + " bytes");
        }
        return out.toByteArray();
    }

    private static final char[] HEX = "0123456789abcdef".toCharArray();

    /** Lowercase hex. */
    public static String hex(byte[] data) {
        char[] out = new char[data.length * 2];
        for (int i = 0; i < data.length; i++) {
            out[2 * i] = HEX[(data[i] >> 4) & 0xf];
            out[2 * i + 1] = HEX[data[i] & 0xf];
        }
        return new String(out);
    }

    /** SHA-256 of bytes, lowercase hex. */
    public static String sha256Hex(byte[] data) {
        return hex(BundleLoader.sha256().digest(data));
    }

    /** float32 values as little-endian bytes (numpy's "<f4" layout, what the golden hashes are of). */
    public static byte[] float32LE(float[] values) {
        ByteBuffer b = ByteBuffer.allocate(values.length * 4).order(ByteOrder.LITTLE_ENDIAN);
        for (float v : values) b.putFloat(v);
        return b.array();
    }
}
