package dev.mmedge.core;

import java.util.ArrayList;
import java.util.List;
import java.util.TreeSet;
import java.util.regex.Pattern;

/** A CPU list such as "4-7" or "0,2,4-5" (mmedge.bench.adb.check_cpu_affinity's rule) and its mask. */
public final class CpuList {
    private static final Pattern FORMAT = Pattern.compile("^\\d{1,4}(-\\d{1,4})?(,\\d{1,4}(-\\d{1,4})?)*$");

    private CpuList() {
    }

    /** The cores of a CPU list, ascending; ConfigException for anything else. */
    public static List<Integer> parse(String text) {
        if (text == null || !FORMAT.matcher(text).matches()) {
            throw new ConfigException("cpu affinity '" + text + "' is not a CPU list; give cores like 4-7 or 0,2,4-5", "arguments");
        }
        TreeSet<Integer> cores = new TreeSet<>();
        for (String part : text.split(",")) {
            String[] ends = part.split("-");
            int a = Integer.parseInt(ends[0]);
            int b = ends.length > 1 ? Integer.parseInt(ends[1]) : a;
            if (a > b) {
                throw new ConfigException("cpu affinity '" + text + "' is not a CPU list; give cores like 4-7 or 0,2,4-5",
                        "arguments");
            }
            for (int c = a; c <= b; c++) cores.add(c);
        }
        return new ArrayList<>(cores);
    }

    /** The hexadecimal affinity mask of the cores (as `taskset -p MASK TID` takes it). */
    public static String hexMask(List<Integer> cores) {
        java.math.BigInteger mask = java.math.BigInteger.ZERO;
        for (int c : cores) mask = mask.setBit(c);
        return mask.toString(16);
    }
}
