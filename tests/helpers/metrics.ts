/**
 * Reading the text exposition format back in tests: every series with its labels and value, each checked to
 * follow a TYPE line of its family; and the admin listener's routes fetched as a client does.
 *
 * @module
 */

import assert from "node:assert/strict";

/** One series read back. */
export interface ParsedSample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** Parses the text exposition format strictly enough for tests: HELP/TYPE lines, escaped label values. */
export function parseExposition(text: string): ParsedSample[] {
  const samples: ParsedSample[] = [];
  const typed = new Set<string>();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const comment = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/s.exec(line);
    if (comment !== null) {
      if (comment[1] === "TYPE") typed.add(comment[2]);
      continue;
    }
    // `s`: label values may hold U+2028 and U+2029, which `.` does not match otherwise.
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/s.exec(line);
    assert.ok(match !== null, `a series line: ${JSON.stringify(line)}`);
    const [, name, labelText = "", value] = match;
    assert.ok([...typed].some((family) => name.startsWith(family)), `${name} has a TYPE line before it`);
    const labels: Record<string, string> = {};
    const pair = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\["\\n])*)"(,|$)/y;
    for (let at = 0; at < labelText.length;) {
      pair.lastIndex = at;
      const found = pair.exec(labelText);
      assert.ok(found !== null, `a label pair at ${at} of ${JSON.stringify(labelText)}`);
      labels[found[1]] = found[2].replace(/\\(["\\n])/g, (_, c: string) => (c === "n" ? "\n" : c));
      at = pair.lastIndex;
    }
    samples.push({ name, labels, value: Number(value) });
  }
  return samples;
}

/** The value of the one series named `name` whose labels include `labels`, or undefined when there is none. */
export function sampleValue(
  text: string,
  name: string,
  labels: Readonly<Record<string, string>> = {},
): number | undefined {
  const found = parseExposition(text).filter((sample) =>
    sample.name === name && Object.entries(labels).every(([key, value]) => sample.labels[key] === value)
  );
  assert.ok(found.length <= 1, `${found.length} series of ${name} match ${JSON.stringify(labels)}`);
  return found[0]?.value;
}

/** GETs a route of an admin listener on 127.0.0.1; with a token, as a bearer token. */
export async function adminGet(
  port: number,
  path: string,
  token?: string,
): Promise<{ status: number; body: string }> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`, {
    headers: token === undefined ? {} : { Authorization: `Bearer ${token}` },
  });
  return { status: response.status, body: await response.text() };
}
