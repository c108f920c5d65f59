package dev.mmedge.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * A JSON Schema (draft 2020-12) validator for the keywords mmedge's schemas use: $ref (local),
 * type, const, enum, properties, additionalProperties, propertyNames, required, min/maxProperties,
 * items, min/maxItems, uniqueItems, minimum, maximum, exclusiveMinimum, exclusiveMaximum,
 * min/maxLength, pattern, allOf, anyOf, if/then/else. A schema that uses any other keyword is refused when
 * the validator is built (so a schema change that this code does not implement fails loudly
 * instead of passing silently).
 *
 * <p>Semantics as JSON Schema defines them: "integer" is any number without a fraction, string
 * lengths count code points, "pattern" is a search (unanchored), numbers compare by value.
 * Patterns are Java regular expressions; the mmedge schemas use only syntax that Java, Python
 * and ECMAScript read alike.
 */
public final class JsonSchema {
    private static final Set<String> KEYWORDS = new HashSet<>(Arrays.asList(
            "$ref", "type", "const", "enum", "properties", "additionalProperties", "propertyNames", "required",
            "minProperties", "maxProperties", "items", "minItems", "maxItems", "uniqueItems", "minimum", "maximum",
            "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern", "allOf", "anyOf", "if",
            "then", "else"));
    private static final Set<String> ANNOTATIONS = new HashSet<>(Arrays.asList(
            "$schema", "$id", "$defs", "$comment", "title", "description", "default", "examples"));
    private static final int MAX_PROBLEMS = 50;
    /** What a problem says when a string fails the schema's bundle-path pattern ($defs/path). */
    static final String NOT_A_BUNDLE_PATH = " is not a relative path inside the bundle";

    private final Map<String, Object> root;
    private final Map<String, Pattern> patterns = new HashMap<>();
    /** $defs/path, the bundle-path definition (null when the schema has none). */
    private final Object pathDef;

    public JsonSchema(Map<String, Object> schema) {
        this.root = schema;
        check(schema, "#");
        Object defs = schema.get("$defs");
        pathDef = defs instanceof Map ? Json.obj(defs).get("path") : null;
    }

    /** Refuses unknown keywords and compiles every pattern up front. */
    private void check(Object node, String where) {
        if (node instanceof Boolean) return;
        if (!(node instanceof Map)) throw new IllegalArgumentException("schema at " + where + " is not an object");
        Map<String, Object> s = Json.obj(node);
        for (Map.Entry<String, Object> e : s.entrySet()) {
            String k = e.getKey();
            Object v = e.getValue();
            if (ANNOTATIONS.contains(k)) {
                if (k.equals("$defs")) for (Map.Entry<String, Object> d : Json.obj(v).entrySet()) {
                    check(d.getValue(), where + "/$defs/" + d.getKey());
                }
                continue;
            }
            if (!KEYWORDS.contains(k)) {
                throw new IllegalArgumentException("schema keyword " + k + " at " + where + " is not implemented");
            }
            switch (k) {
                case "properties":
                    for (Map.Entry<String, Object> p : Json.obj(v).entrySet()) {
                        check(p.getValue(), where + "/properties/" + p.getKey());
                    }
                    break;
                case "allOf": case "anyOf":
                    for (Object sub : Json.arr(v)) check(sub, where + "/" + k);
                    break;
                case "additionalProperties": case "propertyNames": case "items": case "if": case "then": case "else":
                    check(v, where + "/" + k);
                    break;
                case "pattern":
                    patterns.put((String) v, Pattern.compile((String) v));
                    break;
                case "$ref":
                    resolve((String) v);
                    break;
                default:
                    break;
            }
        }
    }

    private Object resolve(String ref) {
        if (!ref.startsWith("#/")) throw new IllegalArgumentException("only local $ref are supported, got " + ref);
        Object node = root;
        for (String part : ref.substring(2).split("/")) {
            part = part.replace("~1", "/").replace("~0", "~");
            if (!(node instanceof Map) || !Json.obj(node).containsKey(part)) {
                throw new IllegalArgumentException("$ref " + ref + " does not resolve");
            }
            node = Json.obj(node).get(part);
        }
        return node;
    }

    /** Every violation (at most 50), each "path: message" with "/"-joined JSON paths ("(root)" for the top). */
    public List<String> validate(Object instance) {
        return violations(instance).problems;
    }

    /** The violations of an instance, and whether every one of them is of the bundle-path rule. */
    public static final class Violations {
        /** At most 50, each "path: message". */
        public final List<String> problems;
        /**
         * True when there are violations and every one is of $defs/path (a files key or a named path
         * that is absolute, has a backslash, a '.' / '..' or empty part, is too long, ...): the loader's
         * code is then "path", not "schema", as docs/bundle-format.md step 5 says.
         */
        public final boolean pathRuleOnly;

        Violations(List<String> problems, boolean pathRuleOnly) {
            this.problems = problems;
            this.pathRuleOnly = pathRuleOnly;
        }
    }

    /** Problems, with how many of them a $defs/path node gave. */
    private static final class Problems extends ArrayList<String> {
        int pathRule;
    }

    public Violations violations(Object instance) {
        Problems out = new Problems();
        validate(root, instance, "", out);
        List<String> problems = out.size() > MAX_PROBLEMS ? out.subList(0, MAX_PROBLEMS) : out;
        return new Violations(problems, !out.isEmpty() && out.pathRule == out.size());
    }

    /** True when the instance is valid (used for if/then and anyOf). */
    private boolean valid(Object schema, Object instance) {
        List<String> sink = new ArrayList<>();
        validate(schema, instance, "", sink);
        return sink.isEmpty();
    }

    private static String at(String path) {
        return path.isEmpty() ? "(root)" : path.substring(1);
    }

    private static String child(String path, Object key) {
        return path + "/" + key;
    }

    private static String typeOf(Object v) {
        if (v instanceof Map) return "object";
        if (v instanceof List) return "array";
        if (v instanceof String) return "string";
        if (v instanceof Boolean) return "boolean";
        if (Json.isInteger(v)) return "integer";
        if (Json.isNumber(v)) return "number";
        return "null";
    }

    private static boolean hasType(Object v, String type) {
        switch (type) {
            case "object": return v instanceof Map;
            case "array": return v instanceof List;
            case "string": return v instanceof String;
            case "boolean": return v instanceof Boolean;
            case "integer": return Json.isInteger(v);
            case "number": return Json.isNumber(v);
            case "null": return v == Json.NULL || v == null;
            default: throw new IllegalArgumentException("unknown type " + type);
        }
    }

    private static String shown(Object v) {
        String text = v instanceof String ? "'" + v + "'" : v instanceof Map ? "an object" : v instanceof List
                ? "an array" : String.valueOf(v);
        return text.length() <= 60 ? text : text.substring(0, 57) + "...";
    }

    private void validate(Object schemaNode, Object v, String path, List<String> out) {
        if (out.size() > MAX_PROBLEMS) return;
        if (schemaNode instanceof Boolean) {
            if (!(Boolean) schemaNode) out.add(at(path) + ": no value is allowed here");
            return;
        }
        Map<String, Object> s = Json.obj(schemaNode);
        if (s == pathDef && out instanceof Problems) { // $defs/path has no sub-schema: whatever it adds is of the path rule
            int before = out.size();
            keywords(s, v, path, out);
            ((Problems) out).pathRule += out.size() - before;
            return;
        }
        keywords(s, v, path, out);
    }

    /** The keywords of one schema node (and its sub-schemas) on one value. */
    private void keywords(Map<String, Object> s, Object v, String path, List<String> out) {
        if (s.containsKey("$ref")) validate(resolve((String) s.get("$ref")), v, path, out);
        if (s.containsKey("type")) {
            Object t = s.get("type");
            List<Object> types = t instanceof List ? Json.arr(t) : Arrays.asList(t);
            boolean ok = false;
            for (Object type : types) ok |= hasType(v, (String) type);
            if (!ok) {
                out.add(at(path) + ": " + shown(v) + " is not of type " + types + " (it is " + typeOf(v) + ")");
                return; // the other keywords would only repeat the type problem
            }
        }
        if (s.containsKey("const") && !Json.equal(s.get("const"), v)) {
            out.add(at(path) + ": " + shown(v) + " was expected to be " + shown(s.get("const")));
        }
        if (s.containsKey("enum")) {
            boolean ok = false;
            for (Object option : Json.arr(s.get("enum"))) ok |= Json.equal(option, v);
            if (!ok) out.add(at(path) + ": " + shown(v) + " is not one of " + s.get("enum"));
        }
        if (Json.isNumber(v)) number(s, Json.num(v), path, out);
        if (v instanceof String) string(s, (String) v, path, out);
        if (v instanceof List) array(s, Json.arr(v), path, out);
        if (v instanceof Map) object(s, Json.obj(v), path, out);
        if (s.containsKey("allOf")) for (Object sub : Json.arr(s.get("allOf"))) validate(sub, v, path, out);
        if (s.containsKey("anyOf")) {
            boolean ok = false;
            for (Object sub : Json.arr(s.get("anyOf"))) ok = ok || valid(sub, v);
            if (!ok) out.add(at(path) + ": " + shown(v) + " is not valid under any of the given schemas");
        }
        if (s.containsKey("if")) {
            if (valid(s.get("if"), v)) {
                if (s.containsKey("then")) validate(s.get("then"), v, path, out);
            } else if (s.containsKey("else")) {
                validate(s.get("else"), v, path, out);
            }
        }
    }

    private static void number(Map<String, Object> s, double x, String path, List<String> out) {
        if (s.containsKey("minimum") && x < Json.num(s.get("minimum"))) {
            out.add(at(path) + ": " + x + " is less than the minimum of " + s.get("minimum"));
        }
        if (s.containsKey("maximum") && x > Json.num(s.get("maximum"))) {
            out.add(at(path) + ": " + x + " is greater than the maximum of " + s.get("maximum"));
        }
        if (s.containsKey("exclusiveMinimum") && x <= Json.num(s.get("exclusiveMinimum"))) {
            out.add(at(path) + ": " + x + " is less than or equal to the minimum of " + s.get("exclusiveMinimum"));
        }
        if (s.containsKey("exclusiveMaximum") && x >= Json.num(s.get("exclusiveMaximum"))) {
            out.add(at(path) + ": " + x + " is greater than or equal to the maximum of " + s.get("exclusiveMaximum"));
        }
    }

    private void string(Map<String, Object> s, String x, String path, List<String> out) {
        int length = x.codePointCount(0, x.length());
        if (s.containsKey("minLength") && length < Json.lng(s.get("minLength"))) {
            out.add(at(path) + ": " + shown(x) + " is shorter than " + s.get("minLength") + " characters");
        }
        if (s.containsKey("maxLength") && length > Json.lng(s.get("maxLength"))) {
            out.add(at(path) + ": " + shown(x) + " is longer than " + s.get("maxLength") + " characters");
        }
        if (s.containsKey("pattern") && !patterns.get((String) s.get("pattern")).matcher(x).find()) {
            String pattern = (String) s.get("pattern");
            out.add(at(path) + ": " + shown(x) + (s == pathDef || pattern.startsWith("^(?!/)")
                    ? NOT_A_BUNDLE_PATH + " ('/'-separated, no leading '/', no '.' or '..' part)"
                    : " does not match " + pattern));
        }
    }

    private void array(Map<String, Object> s, List<Object> x, String path, List<String> out) {
        if (s.containsKey("minItems") && x.size() < Json.lng(s.get("minItems"))) {
            out.add(at(path) + ": has " + x.size() + " items, fewer than " + s.get("minItems"));
        }
        if (s.containsKey("maxItems") && x.size() > Json.lng(s.get("maxItems"))) {
            out.add(at(path) + ": has " + x.size() + " items, more than " + s.get("maxItems"));
        }
        if (Boolean.TRUE.equals(s.get("uniqueItems"))) { // hashed: 65,536 labels must not take n^2 comparisons
            Set<String> seen = new HashSet<>();
            for (Object item : x) {
                if (!seen.add(canonical(item))) {
                    out.add(at(path) + ": has non-unique elements (" + shown(item) + ")");
                    break;
                }
            }
        }
        if (s.containsKey("items")) {
            for (int i = 0; i < x.size() && out.size() <= MAX_PROBLEMS; i++) {
                validate(s.get("items"), x.get(i), child(path, i), out);
            }
        }
    }

    /** A string equal for JSON-equal values (numbers by value, objects by sorted keys). */
    static String canonical(Object v) {
        if (Json.isNumber(v)) return "n" + Double.toString(Json.num(v));
        if (v instanceof String) return "s" + v;
        if (v instanceof List) {
            StringBuilder b = new StringBuilder("[");
            for (Object item : Json.arr(v)) b.append(canonical(item).length()).append(':').append(canonical(item));
            return b.append(']').toString();
        }
        if (v instanceof Map) {
            StringBuilder b = new StringBuilder("{");
            for (String k : new java.util.TreeSet<>(Json.obj(v).keySet())) {
                String item = canonical(Json.obj(v).get(k));
                b.append(k.length()).append(':').append(k).append(item.length()).append(':').append(item);
            }
            return b.append('}').toString();
        }
        return "l" + v;
    }

    private void object(Map<String, Object> s, Map<String, Object> x, String path, List<String> out) {
        if (s.containsKey("required")) {
            for (Object name : Json.arr(s.get("required"))) {
                if (!x.containsKey((String) name)) out.add(at(path) + ": '" + name + "' is a required property");
            }
        }
        if (s.containsKey("minProperties") && x.size() < Json.lng(s.get("minProperties"))) {
            out.add(at(path) + ": has " + x.size() + " properties, fewer than " + s.get("minProperties"));
        }
        if (s.containsKey("maxProperties") && x.size() > Json.lng(s.get("maxProperties"))) {
            out.add(at(path) + ": has " + x.size() + " properties, more than " + s.get("maxProperties"));
        }
        Map<String, Object> props = s.containsKey("properties") ? Json.obj(s.get("properties")) : null;
        for (Map.Entry<String, Object> e : x.entrySet()) {
            if (out.size() > MAX_PROBLEMS) return;
            String key = e.getKey();
            if (s.containsKey("propertyNames")) validate(s.get("propertyNames"), key, child(path, key), out);
            if (props != null && props.containsKey(key)) {
                validate(props.get(key), e.getValue(), child(path, key), out);
            } else if (s.containsKey("additionalProperties")) {
                validate(s.get("additionalProperties"), e.getValue(), child(path, key), out);
            }
        }
    }
}
