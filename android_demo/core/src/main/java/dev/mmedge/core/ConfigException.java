package dev.mmedge.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/** An argument, option or policy is invalid (mmedge/errors.py ConfigError); every problem in one line. */
public class ConfigException extends MMEdgeException {
    private final List<String> problems;

    public ConfigException(String problem, String source) {
        this(Collections.singletonList(problem), source);
    }

    public ConfigException(List<String> problems, String source) {
        super(render(problems, source));
        this.problems = Collections.unmodifiableList(new ArrayList<>(problems));
    }

    private static String render(List<String> problems, String source) {
        StringBuilder out = new StringBuilder("invalid ").append(source).append(':');
        for (String p : problems) out.append("\n  - ").append(p);
        return out.toString();
    }

    public List<String> problems() {
        return problems;
    }
}
