package dev.mmedge.core;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;

/** Memory figures of this process for the benchmark result. */
public interface MemoryProbe {
    /** Peak resident set size so far, MB (mmedge bench's peak_rss_mb), or NaN when unknown. */
    double peakRssMb();

    /** Proportional set size now, MB, or NaN when the platform has no such figure (Android: Debug.getPss). */
    double pssMb();

    /** Linux (and Android): VmHWM of /proc/self/status; no PSS. */
    MemoryProbe PROC = new MemoryProbe() {
        @Override
        public double peakRssMb() {
            try {
                for (String line : new String(Files.readAllBytes(Paths.get("/proc/self/status")), StandardCharsets.UTF_8)
                        .split("\n")) {
                    if (line.startsWith("VmHWM:")) {
                        return Long.parseLong(line.replaceAll("[^0-9]", "")) / 1024.0; // kB -> MB
                    }
                }
            } catch (IOException | NumberFormatException exc) {
                return Double.NaN;
            }
            return Double.NaN;
        }

        @Override
        public double pssMb() {
            return Double.NaN;
        }
    };
}
