package dev.mmedge.core;

import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A strict JSON reader and a writer, with no dependency (the same code on the JVM and on Android).
 *
 * <p>Why not Gson or Android's org.json: a bundle is untrusted input and the spec needs exactly
 * RFC 8259 (no NaN / Infinity, no comments, no single quotes, no BOM), a nesting limit that is
 * checked while parsing, UTF-8 that is refused when malformed, and integers told apart from
 * numbers with a fraction or exponent ({@code schema_version} {@code 1.0} is refused). Android's
 * org.json is lenient and Gson's tree parser forces lenient mode; both would need a second pass.
 *
 * <p>The spec's JSON edge cases (docs/bundle-format.md), refused with a {@link ParseException}:
 * a leading byte-order mark; a repeated key in an object (runtimes would disagree on which value
 * holds); a number that overflows a double ({@code 1e400}); an integer literal (no fraction, no
 * exponent) beyond +-(2^53 - 1), which a JavaScript runtime cannot hold exactly; a backslash-u
 * escape that leaves an unpaired surrogate; nesting deeper than the given limit (the top-level
 * value is level 1, each object or array inside adds one); {@code NaN} and {@code Infinity}.
 *
 * <p>Values: {@code Map<String, Object>} (insertion order kept), {@code List<Object>},
 * {@code String}, {@code Long} (an integer literal), {@code Double} (any other number),
 * {@code Boolean}, and {@link #NULL}.
 */
public final class Json {
    /** JSON null (Java null is not used inside parsed trees, so that a missing key differs from null). */
    public static final Object NULL = new Object() {
        @Override
        public String toString() {
            return "null";
        }
    };

    private Json() {
    }

    /** The largest integer literal accepted, 2^53 - 1 (JavaScript's Number.MAX_SAFE_INTEGER). */
    public static final long MAX_SAFE_INTEGER = (1L << 53) - 1;

    /** A malformed document; the message says where. */
    public static final class ParseException extends Exception {
        public final boolean tooDeep;

        ParseException(String message, boolean tooDeep) {
            super(message);
            this.tooDeep = tooDeep;
        }
    }

    /** Decodes strict UTF-8 (malformed bytes refused) and parses one JSON value nested at most maxDepth levels. */
    public static Object parse(byte[] utf8, int maxDepth) throws ParseException {
        if (utf8.length >= 3 && (utf8[0] & 0xff) == 0xef && (utf8[1] & 0xff) == 0xbb && (utf8[2] & 0xff) == 0xbf) {
            throw new ParseException("starts with a byte-order mark (UTF-8 without a BOM is required)", false);
        }
        String text;
        try {
            text = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(utf8)).toString();
        } catch (CharacterCodingException exc) {
            throw new ParseException("not valid UTF-8", false);
        }
        return parse(text, maxDepth);
    }

    public static Object parse(String text, int maxDepth) throws ParseException {
        if (text.startsWith("\ufeff")) {
            throw new ParseException("starts with a byte-order mark (UTF-8 without a BOM is required)", false);
        }
        Parser p = new Parser(text, maxDepth);
        p.skipSpace();
        Object value = p.value(0);
        p.skipSpace();
        if (p.pos != text.length()) throw p.error("extra data after the JSON value");
        return value;
    }

    private static final class Parser {
        final String s;
        final int maxDepth;
        int pos;

        Parser(String s, int maxDepth) {
            this.s = s;
            this.maxDepth = maxDepth;
        }

        ParseException error(String what) {
            return new ParseException(what + " at character " + pos, false);
        }

        void skipSpace() {
            while (pos < s.length()) {
                char c = s.charAt(pos);
                if (c == ' ' || c == '\t' || c == '\n' || c == '\r') pos++;
                else break;
            }
        }

        Object value(int depth) throws ParseException {
            if (pos >= s.length()) throw error("unexpected end of input");
            char c = s.charAt(pos);
            switch (c) {
                case '{':
                    return object(depth + 1);
                case '[':
                    return array(depth + 1);
                case '"':
                    return string();
                case 't':
                    return literal("true", Boolean.TRUE);
                case 'f':
                    return literal("false", Boolean.FALSE);
                case 'n':
                    return literal("null", NULL);
                default:
                    if (c == '-' || (c >= '0' && c <= '9')) return number();
                    throw error("unexpected character " + describe(c));
            }
        }

        private String describe(char c) {
            return c < 0x20 || c > 0x7e ? String.format("U+%04X", (int) c) : "'" + c + "'";
        }

        Object literal(String word, Object value) throws ParseException {
            if (!s.startsWith(word, pos)) throw error("invalid literal");
            pos += word.length();
            return value;
        }

        void enter(int depth) throws ParseException {
            if (depth > maxDepth) throw new ParseException("nested deeper than " + maxDepth + " levels", true);
        }

        Map<String, Object> object(int depth) throws ParseException {
            enter(depth);
            pos++;
            Map<String, Object> out = new LinkedHashMap<>();
            skipSpace();
            if (pos < s.length() && s.charAt(pos) == '}') {
                pos++;
                return out;
            }
            while (true) {
                skipSpace();
                if (pos >= s.length() || s.charAt(pos) != '"') throw error("expected a string key");
                int keyAt = pos;
                String key = string();
                if (out.containsKey(key)) {
                    pos = keyAt;
                    throw error("duplicate key " + shortKey(key) + " in an object");
                }
                skipSpace();
                if (pos >= s.length() || s.charAt(pos) != ':') throw error("expected ':'");
                pos++;
                skipSpace();
                out.put(key, value(depth));
                skipSpace();
                if (pos >= s.length()) throw error("unexpected end of input in an object");
                char c = s.charAt(pos++);
                if (c == '}') return out;
                if (c != ',') throw error("expected ',' or '}'");
            }
        }

        List<Object> array(int depth) throws ParseException {
            enter(depth);
            pos++;
            List<Object> out = new ArrayList<>();
            skipSpace();
            if (pos < s.length() && s.charAt(pos) == ']') {
                pos++;
                return out;
            }
            while (true) {
                skipSpace();
                out.add(value(depth));
                skipSpace();
                if (pos >= s.length()) throw error("unexpected end of input in an array");
                char c = s.charAt(pos++);
                if (c == ']') return out;
                if (c != ',') throw error("expected ',' or ']'");
            }
        }

        private String shortKey(String key) {
            String shown = key.length() <= 40 ? key : key.substring(0, 37) + "...";
            StringBuilder b = new StringBuilder("'");
            for (int i = 0; i < shown.length(); i++) {
                char c = shown.charAt(i);
                if (c < 0x20 || c > 0x7e) b.append(String.format("\\u%04x", (int) c));
                else b.append(c);
            }
            return b.append("'").toString();
        }

        String string() throws ParseException {
            int start = pos;
            String out = rawString();
            for (int i = 0; i < out.length(); i++) {
                char c = out.charAt(i);
                if (Character.isHighSurrogate(c) && i + 1 < out.length() && Character.isLowSurrogate(out.charAt(i + 1))) {
                    i++;
                } else if (Character.isSurrogate(c)) {
                    pos = start;
                    throw error("unpaired surrogate U+" + String.format("%04X", (int) c) + " in a string");
                }
            }
            return out;
        }

        private String rawString() throws ParseException {
            pos++; // opening quote
            StringBuilder out = new StringBuilder();
            while (true) {
                if (pos >= s.length()) throw error("unterminated string");
                char c = s.charAt(pos++);
                if (c == '"') return out.toString();
                if (c < 0x20) throw error("control character in a string");
                if (c != '\\') {
                    out.append(c);
                    continue;
                }
                if (pos >= s.length()) throw error("unterminated escape");
                char e = s.charAt(pos++);
                switch (e) {
                    case '"': out.append('"'); break;
                    case '\\': out.append('\\'); break;
                    case '/': out.append('/'); break;
                    case 'b': out.append('\b'); break;
                    case 'f': out.append('\f'); break;
                    case 'n': out.append('\n'); break;
                    case 'r': out.append('\r'); break;
                    case 't': out.append('\t'); break;
                    case 'u':
                        if (pos + 4 > s.length()) throw error("short \\u escape");
                        int code = 0;
                        for (int i = 0; i < 4; i++) {
                            int d = Character.digit(s.charAt(pos + i), 16);
                            if (d < 0) throw error("bad \\u escape");
                            code = code * 16 + d;
                        }
                        pos += 4;
                        out.append((char) code); // a surrogate must pair with the next one: string() checks
                        break;
                    default:
                        throw error("bad escape \\" + e);
                }
            }
        }

        Object number() throws ParseException {
            int start = pos;
            if (s.charAt(pos) == '-') pos++;
            if (pos >= s.length()) throw error("bad number");
            if (s.charAt(pos) == '0') {
                pos++;
            } else if (s.charAt(pos) >= '1' && s.charAt(pos) <= '9') {
                while (pos < s.length() && Character.isDigit(s.charAt(pos)) && s.charAt(pos) < 128) pos++;
            } else {
                throw error("bad number");
            }
            boolean integral = true;
            if (pos < s.length() && s.charAt(pos) == '.') {
                integral = false;
                pos++;
                int digits = pos;
                while (pos < s.length() && s.charAt(pos) >= '0' && s.charAt(pos) <= '9') pos++;
                if (pos == digits) throw error("bad fraction");
            }
            if (pos < s.length() && (s.charAt(pos) == 'e' || s.charAt(pos) == 'E')) {
                integral = false;
                pos++;
                if (pos < s.length() && (s.charAt(pos) == '+' || s.charAt(pos) == '-')) pos++;
                int digits = pos;
                while (pos < s.length() && s.charAt(pos) >= '0' && s.charAt(pos) <= '9') pos++;
                if (pos == digits) throw error("bad exponent");
            }
            String literal = s.substring(start, pos);
            if (integral) {
                long v;
                try {
                    v = Long.parseLong(literal);
                } catch (NumberFormatException tooBig) {
                    v = Long.MAX_VALUE;
                }
                if (v > MAX_SAFE_INTEGER || v < -MAX_SAFE_INTEGER) {
                    pos = start;
                    throw error("integer " + (literal.length() <= 30 ? literal : literal.substring(0, 27) + "...")
                            + " is beyond +-(2^53 - 1)");
                }
                return v;
            }
            double d = Double.parseDouble(literal);
            if (Double.isInfinite(d)) {
                pos = start;
                throw error("number " + (literal.length() <= 30 ? literal : literal.substring(0, 27) + "...")
                        + " overflows a double");
            }
            return d;
        }
    }

    // ------------------------------------------------------------------------------ accessors
    /** True for an integral JSON number (a Long, or a Double with no fraction, as JSON Schema's "integer"). */
    public static boolean isInteger(Object v) {
        if (v instanceof Long || v instanceof Integer) return true;
        if (v instanceof Double) {
            double d = (Double) v;
            return !Double.isInfinite(d) && d == Math.rint(d);
        }
        return false;
    }

    public static boolean isNumber(Object v) {
        return v instanceof Long || v instanceof Integer || v instanceof Double;
    }

    @SuppressWarnings("unchecked")
    public static Map<String, Object> obj(Object v) {
        return (Map<String, Object>) v;
    }

    @SuppressWarnings("unchecked")
    public static List<Object> arr(Object v) {
        return (List<Object>) v;
    }

    public static double num(Object v) {
        return ((Number) v).doubleValue();
    }

    public static long lng(Object v) {
        return ((Number) v).longValue();
    }

    /** JSON equality: numbers compare by value (1 == 1.0), containers deeply. */
    public static boolean equal(Object a, Object b) {
        if (isNumber(a) && isNumber(b)) {
            if (a instanceof Long && b instanceof Long) return a.equals(b);
            return num(a) == num(b);
        }
        if (a instanceof Map && b instanceof Map) {
            Map<String, Object> x = obj(a);
            Map<String, Object> y = obj(b);
            if (!x.keySet().equals(y.keySet())) return false;
            for (Map.Entry<String, Object> e : x.entrySet()) {
                if (!equal(e.getValue(), y.get(e.getKey()))) return false;
            }
            return true;
        }
        if (a instanceof List && b instanceof List) {
            List<Object> x = arr(a);
            List<Object> y = arr(b);
            if (x.size() != y.size()) return false;
            for (int i = 0; i < x.size(); i++) if (!equal(x.get(i), y.get(i))) return false;
            return true;
        }
        return a == b || (a != null && a.equals(b));
    }

    // ------------------------------------------------------------------------------ writer
    /** Compact JSON of Maps, Lists, Strings, Numbers, Booleans, null / NULL; NaN and infinities refused. */
    public static String write(Object value) {
        StringBuilder out = new StringBuilder();
        write(value, out, -1, 0);
        return out.toString();
    }

    /** JSON indented by `indent` spaces per level. */
    public static String write(Object value, int indent) {
        StringBuilder out = new StringBuilder();
        write(value, out, indent, 0);
        return out.toString();
    }

    private static void newline(StringBuilder out, int indent, int level) {
        if (indent < 0) return;
        out.append('\n');
        for (int i = 0; i < indent * level; i++) out.append(' ');
    }

    private static void write(Object v, StringBuilder out, int indent, int level) {
        if (v == null || v == NULL) {
            out.append("null");
        } else if (v instanceof String) {
            quote((String) v, out);
        } else if (v instanceof Boolean) {
            out.append(v.toString());
        } else if (v instanceof Double || v instanceof Float) {
            double d = ((Number) v).doubleValue();
            if (Double.isNaN(d) || Double.isInfinite(d)) {
                throw new IllegalArgumentException("JSON has no NaN or Infinity (got " + d + ")");
            }
            out.append(Double.toString(d)); // e.g. 1.0, 0.5, 1.0E-5: all valid JSON numbers
        } else if (v instanceof Number) {
            out.append(((Number) v).longValue());
        } else if (v instanceof Map) {
            Map<?, ?> m = (Map<?, ?>) v;
            out.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> e : m.entrySet()) {
                if (!first) out.append(',');
                first = false;
                newline(out, indent, level + 1);
                quote(String.valueOf(e.getKey()), out);
                out.append(indent < 0 ? ":" : ": ");
                write(e.getValue(), out, indent, level + 1);
            }
            if (!m.isEmpty()) newline(out, indent, level);
            out.append('}');
        } else if (v instanceof List) {
            List<?> l = (List<?>) v;
            out.append('[');
            for (int i = 0; i < l.size(); i++) {
                if (i > 0) out.append(',');
                newline(out, indent, level + 1);
                write(l.get(i), out, indent, level + 1);
            }
            if (!l.isEmpty()) newline(out, indent, level);
            out.append(']');
        } else if (v instanceof int[]) {
            List<Object> l = new ArrayList<>();
            for (int x : (int[]) v) l.add((long) x);
            write(l, out, indent, level);
        } else {
            throw new IllegalArgumentException("cannot write " + v.getClass().getName() + " as JSON");
        }
    }

    private static void quote(String s, StringBuilder out) {
        out.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"': out.append("\\\""); break;
                case '\\': out.append("\\\\"); break;
                case '\n': out.append("\\n"); break;
                case '\r': out.append("\\r"); break;
                case '\t': out.append("\\t"); break;
                default:
                    if (c < 0x20 || Character.isSurrogate(c) && !validSurrogate(s, i)) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
            }
        }
        out.append('"');
    }

    private static boolean validSurrogate(String s, int i) {
        char c = s.charAt(i);
        if (Character.isHighSurrogate(c)) return i + 1 < s.length() && Character.isLowSurrogate(s.charAt(i + 1));
        return i > 0 && Character.isHighSurrogate(s.charAt(i - 1));
    }

    /** UTF-8 bytes of a string (unpaired surrogates become '?'; the writer escapes them first). */
    public static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static String decodeStrict(byte[] data) throws CharacterCodingException {
        CharBuffer cb = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT)
                .decode(ByteBuffer.wrap(data));
        return cb.toString();
    }
}
