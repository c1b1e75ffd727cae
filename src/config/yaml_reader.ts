/**
 * A small typed reader for YAML configuration that reports every problem at once.
 *
 * The node and agent configs are read through it into typed objects, so code below `src/config/` never sees
 * raw YAML. Each reader method validates one key; a problem (wrong type, out of range, missing, unknown key,
 * duplicate key, syntax error) is recorded with its key path, line and column, and reading goes on, so the
 * operator sees every problem of a file in one run:
 *
 * ```text
 * node.yaml:12:3: limits.maxConnections: expected an integer from 1 to 1000000, got "lots"
 * ```
 *
 * After a problem a reader returns a placeholder (the default, or `""`, `min`, `false`, `[]`) so the callback
 * can finish building its object; {@linkcode readYamlConfig} then throws, so a placeholder never escapes.
 *
 * @module
 */

import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument } from "yaml";
import type { Document, Pair, Scalar, YAMLMap, YAMLSeq } from "yaml";

/** One problem of a configuration file, located at the key or value it is about. */
export interface ConfigProblem {
  /** Key path such as `limits.maxConnections`, `relayPorts[2].port` or `targets."*.example.com"`; `""` for the file. */
  readonly path: string;
  /** 1-based line. */
  readonly line: number;
  /** 1-based column. */
  readonly column: number;
  readonly message: string;
}

/**
 * Thrown by {@linkcode readYamlConfig} when a file has problems; the message lists them all, one per line, as
 * `file:line:column: path: message`, in source order.
 */
export class ConfigError extends Error {
  readonly fileName: string;
  readonly problems: readonly ConfigProblem[];

  constructor(fileName: string, problems: readonly ConfigProblem[]) {
    super(
      problems.map((p) =>
        `${fileName}:${p.line}:${p.column}: ${p.path === "" ? "" : `${p.path}: `}${p.message}`
      ).join("\n"),
    );
    this.name = "ConfigError";
    this.fileName = fileName;
    this.problems = problems;
  }
}

/** Inclusive bounds of an integer (or of a duration, in seconds). */
export interface IntegerRange {
  readonly min: number;
  readonly max: number;
}

/** Checks on a string value. */
export interface StringOptions {
  /** Refuse `""`. */
  readonly nonEmpty?: boolean;
  readonly pattern?: RegExp;
  /** What the value should be, as a noun phrase used in messages: `"a hostname such as app.example.com"`. */
  readonly patternHint?: string;
}

/** Checks on a list or free-form mapping. */
export interface CollectionOptions {
  /** Refuse an empty list or mapping. */
  readonly nonEmpty?: boolean;
}

/** The key must be present; when it is missing the problem is located at the mapping that should hold it. */
export interface RequiredKey {
  readonly required: true;
  readonly default?: never;
}

/** A missing key reads as `default`. */
export interface KeyWithDefault<T> {
  readonly default: T;
  readonly required?: never;
}

/** A missing key reads as `undefined`. */
export interface OptionalKey {
  readonly required?: boolean;
  readonly default?: never;
}

/**
 * Reads the keys of one YAML mapping. Every key that is present but never read is reported as unknown when
 * {@linkcode readYamlConfig} finishes; {@linkcode MapReader.has} does not count as reading.
 */
export interface MapReader {
  /** Path of this mapping, `""` at the top level. */
  readonly path: string;
  /** Whether the key is present (even with an empty value). */
  has(key: string): boolean;
  /** The key's value for reading it yourself (for values of several shapes), or `undefined` when missing. */
  value(key: string): ValueReader | undefined;

  string(key: string, options: StringOptions & (RequiredKey | KeyWithDefault<string>)): string;
  string(key: string, options?: StringOptions & OptionalKey): string | undefined;

  integer(key: string, options: IntegerRange & (RequiredKey | KeyWithDefault<number>)): number;
  integer(key: string, options: IntegerRange & OptionalKey): number | undefined;

  /** A YAML boolean: `true` or `false` (YAML 1.2, so `yes` and `on` are refused). */
  boolean(key: string, options: RequiredKey | KeyWithDefault<boolean>): boolean;
  boolean(key: string, options?: OptionalKey): boolean | undefined;

  /** A duration in whole seconds, written as an integer (seconds) or as in {@linkcode parseDurationSeconds}. */
  durationSeconds(key: string, options: IntegerRange & (RequiredKey | KeyWithDefault<number>)): number;
  durationSeconds(key: string, options: IntegerRange & OptionalKey): number | undefined;

  stringList(
    key: string,
    options: CollectionOptions & (RequiredKey | KeyWithDefault<readonly string[]>),
  ): string[];
  stringList(key: string, options?: CollectionOptions & OptionalKey): string[] | undefined;

  /**
   * A nested mapping. A missing (or empty) one reads as a mapping without keys, so its keys' defaults apply
   * and its required keys are reported; after a problem the reader returned reports nothing more.
   */
  map(key: string, options?: { readonly required?: boolean }): MapReader;

  /** A list; items for which `item` returns `undefined` (having reported why) are left out. */
  list<T>(
    key: string,
    item: (value: ValueReader, index: number) => T | undefined,
    options: CollectionOptions & (RequiredKey | KeyWithDefault<readonly T[]>),
  ): T[];
  list<T>(
    key: string,
    item: (value: ValueReader, index: number) => T | undefined,
    options?: CollectionOptions & OptionalKey,
  ): T[] | undefined;

  /** A free-form mapping such as hostname → target; its keys are data, never reported as unknown. */
  entries<T>(
    key: string,
    entry: (entryKey: string, value: ValueReader) => T | undefined,
    options: CollectionOptions & RequiredKey,
  ): Map<string, T>;
  entries<T>(
    key: string,
    entry: (entryKey: string, value: ValueReader) => T | undefined,
    options?: CollectionOptions & OptionalKey,
  ): Map<string, T> | undefined;

  /** Reports a semantic problem at the key's value, or at this mapping when the key is missing. */
  problem(key: string, message: string): void;
}

/** Reads one YAML value of a shape you check first (`isScalar`, `isMap`, `isList`). */
export interface ValueReader {
  readonly path: string;
  /** A scalar, including an empty value. */
  isScalar(): boolean;
  isMap(): boolean;
  isList(): boolean;
  asString(options?: StringOptions): string | undefined;
  asInteger(range: IntegerRange): number | undefined;
  asBoolean(): boolean | undefined;
  asDurationSeconds(range: IntegerRange): number | undefined;
  /** See {@linkcode MapReader.map}; an empty value reads as a mapping without keys. */
  asMap(): MapReader;
  asList<T>(
    item: (value: ValueReader, index: number) => T | undefined,
    options?: CollectionOptions,
  ): T[] | undefined;
  asEntries<T>(
    entry: (entryKey: string, value: ValueReader) => T | undefined,
    options?: CollectionOptions,
  ): Map<string, T> | undefined;
  /** Reports a semantic problem located at this value. */
  problem(message: string): void;
}

/**
 * Parses `text` as YAML and reads it with `read`, throwing a {@linkcode ConfigError} that lists every problem
 * (syntax, duplicate or unknown keys, and whatever `read` found), in source order.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readYamlConfig } from "./yaml_reader.ts";
 * const text = "idleTimeoutSeconds: 30\nrelayPorts: [443, { port: 8443 }]\n";
 * const config = readYamlConfig(text, "node.yaml", (root) => ({
 *   idleTimeoutSeconds: root.integer("idleTimeoutSeconds", { min: 0, max: 86_400, default: 60 }),
 *   relayPorts: root.list("relayPorts", (v) =>
 *     v.isScalar()
 *       ? v.asInteger({ min: 1, max: 65_535 })
 *       : v.asMap().integer("port", { min: 1, max: 65_535, required: true }), { default: [] }),
 * }));
 * assert.deepEqual(config, { idleTimeoutSeconds: 30, relayPorts: [443, 8443] });
 * ```
 */
export function readYamlConfig<T>(text: string, fileName: string, read: (root: MapReader) => T): T {
  const lines = new LineCounter();
  let doc;
  try {
    doc = parseDocument(text, { lineCounter: lines, uniqueKeys: false, prettyErrors: false });
  } catch (error) {
    // The parser recurses, so absurdly deep nesting can exhaust the stack; that is still the file's problem.
    const reason = error instanceof Error ? error.message : String(error);
    throw new ConfigError(fileName, [{ path: "", line: 1, column: 1, message: `invalid YAML: ${reason}` }]);
  }
  const reading = new Reading(text, doc, lines);
  for (const error of doc.errors) {
    const message = error.code === "MULTIPLE_DOCS"
      ? "expected one YAML document, found a second one"
      : `invalid YAML: ${error.message}`;
    reading.report("", error.pos[0], message);
  }
  if (doc.errors.length > 0) throw reading.error(fileName);
  for (const warning of doc.warnings) reading.report("", warning.pos[0], warning.message);

  const contents = doc.contents;
  if (contents === null || (isScalar(contents) && contents.value === null)) {
    reading.report("", 0, "expected a mapping of settings at the top level, got an empty file");
  } else if (!isMap(contents)) {
    reading.report(
      "",
      start(contents, 0),
      `expected a mapping of settings at the top level, got ${describe(contents)}`,
    );
  } else {
    reading.checkKeys(contents);
    const root = reading.mapReader("", contents, start(contents, 0));
    let value: T;
    try {
      value = read(root);
    } finally {
      reading.finish();
    }
    if (reading.problems.length === 0) return value;
  }
  throw reading.error(fileName);
}

const DURATION_UNIT_SECONDS: Readonly<Record<string, number>> = { "": 1, s: 1, m: 60, h: 3_600, d: 86_400 };

/**
 * Parses a duration such as `30s`, `5m`, `1h`, `2d` or `90` (plain seconds) into whole seconds, or returns
 * `null` when it is not one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseDurationSeconds } from "./yaml_reader.ts";
 * assert.equal(parseDurationSeconds("5m"), 300);
 * assert.equal(parseDurationSeconds("1.5h"), null);
 * ```
 */
export function parseDurationSeconds(text: string): number | null {
  const match = /^([0-9]+)([smhd]?)$/.exec(text);
  if (match === null) return null;
  const seconds = Number(match[1]) * DURATION_UNIT_SECONDS[match[2]];
  return Number.isSafeInteger(seconds) ? seconds : null;
}

/** A value after alias resolution: `null` is an empty value (`key:`, `~`, `null`). */
type Content = Scalar | YAMLMap | YAMLSeq | null;

const INT_TAG = "tag:yaml.org,2002:int";
const INTEGER_SOURCE = /^[-+]?(?:[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$/;
const PLAIN_KEY = /^[A-Za-z_][A-Za-z0-9_-]*$/;
const MAX_SHOWN_LENGTH = 40;

/** The state of one `readYamlConfig` call, shared by all of its readers. */
class Reading {
  readonly problems: ConfigProblem[] = [];
  readonly #text: string;
  readonly #doc: Document;
  readonly #lines: LineCounter;
  readonly #maps = new Map<string, YamlMapReader>();
  readonly #reported = new Set<string>();
  #finished = false;

  constructor(text: string, doc: Document, lines: LineCounter) {
    this.#text = text;
    this.#doc = doc;
    this.#lines = lines;
  }

  report(path: string, offset: number, message: string): void {
    const { line, col } = this.#lines.linePos(Math.min(offset, this.#text.length));
    // A value read twice (or an alias met twice) must not list the same problem twice.
    const identity = JSON.stringify([path, line, col, message]);
    if (this.#reported.has(identity)) return;
    this.#reported.add(identity);
    this.problems.push({ path, line, column: col, message });
  }

  error(fileName: string): ConfigError {
    const sorted = this.problems.toSorted((a, b) => a.line - b.line || a.column - b.column);
    return new ConfigError(fileName, sorted);
  }

  assertOpen(): void {
    if (this.#finished) throw new Error("A config reader was used after readYamlConfig returned");
  }

  /** Resolves an alias to its anchored node; `undefined` when it refers to no anchor (reported here). */
  resolve(node: unknown, path: string, offset: number): Content | undefined {
    if (isAlias(node)) {
      const target = node.resolve(this.#doc);
      if (target === undefined) this.report(path, offset, `alias *${node.source} refers to no anchor`);
      return target === undefined ? undefined : this.resolve(target, path, offset);
    }
    if (isMap(node) || isSeq(node)) return node;
    if (isScalar(node)) return node.value === null ? null : node;
    return null;
  }

  /** One reader per mapping path, so reading a mapping twice still tracks its keys once. */
  mapReader(path: string, node: YAMLMap | null, offset: number): YamlMapReader {
    let reader = this.#maps.get(path);
    if (reader === undefined) {
      reader = new YamlMapReader(this, path, node === null ? new Map() : pairsByKey(node), offset, false);
      this.#maps.set(path, reader);
    }
    return reader;
  }

  /** Reports duplicate and non-string keys anywhere in the document, read or not. */
  checkKeys(root: YAMLMap): void {
    const pending: { node: unknown; path: string }[] = [{ node: root, path: "" }];
    for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
      const { node, path } = next;
      if (isSeq(node)) {
        node.items.forEach((item, index) => pending.push({ node: item, path: `${path}[${index}]` }));
      } else if (isMap(node)) {
        const firstLines = new Map<string, number>();
        for (const pair of node.items) {
          const keyOffset = start(pair.key, start(pair.value, start(node, 0)));
          const key = keyString(pair.key);
          if (key === undefined) {
            const got = pair.key === null || (isScalar(pair.key) && pair.key.value === null)
              ? "an empty key"
              : describe(pair.key);
            this.report(path, keyOffset, `expected a plain key, got ${got}`);
            continue;
          }
          const childPath = joinKey(path, key);
          const firstLine = firstLines.get(key);
          if (firstLine !== undefined) {
            this.report(childPath, keyOffset, `duplicate key (first defined at line ${firstLine})`);
          } else {
            firstLines.set(key, this.#lines.linePos(keyOffset).line);
          }
          pending.push({ node: pair.value, path: childPath });
        }
      }
    }
  }

  /** Reports the keys nobody read and closes every reader. */
  finish(): void {
    this.#finished = true;
    for (const reader of this.#maps.values()) reader.reportUnknownKeys();
  }
}

class YamlMapReader implements MapReader {
  readonly path: string;
  readonly #reading: Reading;
  readonly #pairs: ReadonlyMap<string, Pair>;
  /** Where problems about missing keys are located: the mapping itself, or where it would be. */
  readonly #offset: number;
  /** After a problem with the mapping itself: reads return placeholders and report nothing. */
  readonly #silent: boolean;
  readonly #read = new Set<string>();

  constructor(
    reading: Reading,
    path: string,
    pairs: ReadonlyMap<string, Pair>,
    offset: number,
    silent: boolean,
  ) {
    this.#reading = reading;
    this.path = path;
    this.#pairs = pairs;
    this.#offset = offset;
    this.#silent = silent;
  }

  has(key: string): boolean {
    this.#reading.assertOpen();
    return this.#pairs.has(key);
  }

  value(key: string): YamlValue | undefined {
    this.#reading.assertOpen();
    this.#read.add(key);
    const pair = this.#pairs.get(key);
    if (pair === undefined) return undefined;
    return new YamlValue(this.#reading, joinKey(this.path, key), pair.value, start(pair.key, this.#offset));
  }

  string(key: string, options: StringOptions & (RequiredKey | KeyWithDefault<string>)): string;
  string(key: string, options?: StringOptions & OptionalKey): string | undefined;
  string(
    key: string,
    options: StringOptions & (RequiredKey | KeyWithDefault<string> | OptionalKey) = {},
  ): string | undefined {
    return this.#read1(key, options, "", (v) => v.asString(options));
  }

  integer(key: string, options: IntegerRange & (RequiredKey | KeyWithDefault<number>)): number;
  integer(key: string, options: IntegerRange & OptionalKey): number | undefined;
  integer(
    key: string,
    options: IntegerRange & (RequiredKey | KeyWithDefault<number> | OptionalKey),
  ): number | undefined {
    return this.#read1(key, options, options.min, (v) => v.asInteger(options));
  }

  boolean(key: string, options: RequiredKey | KeyWithDefault<boolean>): boolean;
  boolean(key: string, options?: OptionalKey): boolean | undefined;
  boolean(
    key: string,
    options: RequiredKey | KeyWithDefault<boolean> | OptionalKey = {},
  ): boolean | undefined {
    return this.#read1(key, options, false, (v) => v.asBoolean());
  }

  durationSeconds(key: string, options: IntegerRange & (RequiredKey | KeyWithDefault<number>)): number;
  durationSeconds(key: string, options: IntegerRange & OptionalKey): number | undefined;
  durationSeconds(
    key: string,
    options: IntegerRange & (RequiredKey | KeyWithDefault<number> | OptionalKey),
  ): number | undefined {
    return this.#read1(key, options, options.min, (v) => v.asDurationSeconds(options));
  }

  stringList(
    key: string,
    options: CollectionOptions & (RequiredKey | KeyWithDefault<readonly string[]>),
  ): string[];
  stringList(key: string, options?: CollectionOptions & OptionalKey): string[] | undefined;
  stringList(
    key: string,
    options: CollectionOptions & (RequiredKey | KeyWithDefault<readonly string[]> | OptionalKey) = {},
  ): string[] | undefined {
    return this.#list(key, (v) => v.asString(), options);
  }

  map(key: string, options: { readonly required?: boolean } = {}): MapReader {
    const value = this.value(key);
    if (value !== undefined) return value.asMap();
    if (options.required === true) {
      this.#missing(key);
      return new YamlMapReader(this.#reading, joinKey(this.path, key), new Map(), this.#offset, true);
    }
    // Not registered: it has no keys, so none can be unknown.
    return new YamlMapReader(this.#reading, joinKey(this.path, key), new Map(), this.#offset, this.#silent);
  }

  list<T>(
    key: string,
    item: (value: ValueReader, index: number) => T | undefined,
    options: CollectionOptions & (RequiredKey | KeyWithDefault<readonly T[]>),
  ): T[];
  list<T>(
    key: string,
    item: (value: ValueReader, index: number) => T | undefined,
    options?: CollectionOptions & OptionalKey,
  ): T[] | undefined;
  list<T>(
    key: string,
    item: (value: ValueReader, index: number) => T | undefined,
    options: CollectionOptions & (RequiredKey | KeyWithDefault<readonly T[]> | OptionalKey) = {},
  ): T[] | undefined {
    return this.#list(key, item, options);
  }

  entries<T>(
    key: string,
    entry: (entryKey: string, value: ValueReader) => T | undefined,
    options: CollectionOptions & RequiredKey,
  ): Map<string, T>;
  entries<T>(
    key: string,
    entry: (entryKey: string, value: ValueReader) => T | undefined,
    options?: CollectionOptions & OptionalKey,
  ): Map<string, T> | undefined;
  entries<T>(
    key: string,
    entry: (entryKey: string, value: ValueReader) => T | undefined,
    options: CollectionOptions & (RequiredKey | OptionalKey) = {},
  ): Map<string, T> | undefined {
    return this.#read1(key, options, new Map(), (v) => v.asEntries(entry, options));
  }

  problem(key: string, message: string): void {
    const value = this.value(key);
    if (value !== undefined) value.problem(message);
    else if (!this.#silent) this.#reading.report(joinKey(this.path, key), this.#offset, message);
  }

  reportUnknownKeys(): void {
    if (this.#silent) return;
    for (const [key, pair] of this.#pairs) {
      if (this.#read.has(key)) continue;
      const suggestion = suggestKey(key, this.#read);
      const hint = suggestion === undefined ? "" : `; did you mean \`${suggestion}\`?`;
      this.#reading.report(joinKey(this.path, key), start(pair.key, this.#offset), `unknown key${hint}`);
    }
  }

  /** Reads one key; falls back to the default, a placeholder when required, else `undefined`. */
  #read1<T>(
    key: string,
    options: { readonly required?: boolean; readonly default?: T },
    placeholder: T,
    read: (value: YamlValue) => T | undefined,
  ): T | undefined {
    const value = this.value(key);
    const result = value === undefined ? undefined : read(value);
    if (result !== undefined) return result;
    if (value === undefined && options.required === true) this.#missing(key);
    if (options.default !== undefined) return options.default;
    return options.required === true ? placeholder : undefined;
  }

  #list<T>(
    key: string,
    item: (value: ValueReader, index: number) => T | undefined,
    options: CollectionOptions & (RequiredKey | KeyWithDefault<readonly T[]> | OptionalKey),
  ): T[] | undefined {
    const list: readonly T[] | undefined = this.#read1(key, options, [], (v) => v.asList(item, options));
    // A copy, so a caller changing its list never changes the default.
    return list === undefined ? undefined : [...list];
  }

  #missing(key: string): void {
    if (!this.#silent) this.#reading.report(joinKey(this.path, key), this.#offset, "required key is missing");
  }
}

class YamlValue implements ValueReader {
  readonly path: string;
  readonly #reading: Reading;
  /** `undefined` after a problem already reported (an alias to no anchor): every read stays silent. */
  readonly #node: Content | undefined;
  readonly #offset: number;

  constructor(reading: Reading, path: string, node: unknown, fallbackOffset: number) {
    this.#reading = reading;
    this.path = path;
    // An empty value has no text of its own: locate it at its key.
    const offset = isScalar(node) && node.value === null ? fallbackOffset : start(node, fallbackOffset);
    this.#offset = offset;
    this.#node = reading.resolve(node, path, offset);
  }

  isScalar(): boolean {
    this.#reading.assertOpen();
    return this.#node === null || isScalar(this.#node);
  }

  isMap(): boolean {
    this.#reading.assertOpen();
    return isMap(this.#node);
  }

  isList(): boolean {
    this.#reading.assertOpen();
    return isSeq(this.#node);
  }

  asString(options: StringOptions = {}): string | undefined {
    const node = this.#open();
    if (node === undefined) return undefined;
    const expected = options.patternHint ?? (options.nonEmpty === true ? "a non-empty string" : "a string");
    if (!isScalar(node) || typeof node.value !== "string") {
      const readAs = isScalar(node) && node.type === "PLAIN" ? typeof node.value : undefined;
      const quoteHint = readAs === undefined
        ? ""
        : `, which YAML reads as a ${readAs}; quote it to make it a string`;
      this.problem(`expected ${expected}, got ${describe(node)}${quoteHint}`);
      return undefined;
    }
    const text = node.value;
    if (
      (options.nonEmpty === true && text === "") ||
      (options.pattern !== undefined && !options.pattern.test(text))
    ) {
      const wanted = options.patternHint ??
        (options.pattern === undefined ? expected : `a string matching ${options.pattern}`);
      this.problem(`expected ${wanted}, got ${JSON.stringify(shorten(text))}`);
      return undefined;
    }
    return text;
  }

  asInteger(range: IntegerRange): number | undefined {
    const node = this.#open();
    if (node === undefined) return undefined;
    const integer = integerValue(node);
    if (integer === undefined || integer < range.min || integer > range.max) {
      this.problem(`expected an integer from ${range.min} to ${range.max}, got ${describe(node)}`);
      return undefined;
    }
    return integer;
  }

  asBoolean(): boolean | undefined {
    const node = this.#open();
    if (node === undefined) return undefined;
    if (!isScalar(node) || typeof node.value !== "boolean") {
      this.problem(`expected true or false, got ${describe(node)}`);
      return undefined;
    }
    return node.value;
  }

  asDurationSeconds(range: IntegerRange): number | undefined {
    const node = this.#open();
    if (node === undefined) return undefined;
    const seconds = integerValue(node) ??
      (isScalar(node) && typeof node.value === "string"
        ? parseDurationSeconds(node.value) ?? undefined
        : undefined);
    if (seconds === undefined || seconds < range.min || seconds > range.max) {
      this.problem(
        `expected a duration from ${range.min} to ${range.max} seconds (such as 90, 30s, 5m, 1h or 2d), ` +
          `got ${describe(node)}`,
      );
      return undefined;
    }
    return seconds;
  }

  asMap(): MapReader {
    const node = this.#open();
    if (node === null || isMap(node)) return this.#reading.mapReader(this.path, node, this.#offset);
    if (node !== undefined) this.problem(`expected a mapping, got ${describe(node)}`);
    return new YamlMapReader(this.#reading, this.path, new Map(), this.#offset, true);
  }

  asList<T>(
    item: (value: ValueReader, index: number) => T | undefined,
    options: CollectionOptions = {},
  ): T[] | undefined {
    const node = this.#open();
    if (node === undefined) return undefined;
    if (node !== null && !isSeq(node)) {
      this.problem(`expected a list, got ${describe(node)}`);
      return undefined;
    }
    const items = node === null ? [] : node.items;
    if (options.nonEmpty === true && items.length === 0) {
      this.problem("expected a non-empty list, got an empty one");
      return undefined;
    }
    const result: T[] = [];
    items.forEach((itemNode, index) => {
      const value = item(
        new YamlValue(this.#reading, `${this.path}[${index}]`, itemNode, this.#offset),
        index,
      );
      if (value !== undefined) result.push(value);
    });
    return result;
  }

  asEntries<T>(
    entry: (entryKey: string, value: ValueReader) => T | undefined,
    options: CollectionOptions = {},
  ): Map<string, T> | undefined {
    const node = this.#open();
    if (node === undefined) return undefined;
    if (node !== null && !isMap(node)) {
      this.problem(`expected a mapping, got ${describe(node)}`);
      return undefined;
    }
    const pairs = node === null ? new Map<string, Pair>() : pairsByKey(node);
    if (options.nonEmpty === true && pairs.size === 0) {
      this.problem("expected a non-empty mapping, got an empty one");
      return undefined;
    }
    const result = new Map<string, T>();
    for (const [key, pair] of pairs) {
      const value = new YamlValue(
        this.#reading,
        joinKey(this.path, key),
        pair.value,
        start(pair.key, this.#offset),
      );
      const read = entry(key, value);
      if (read !== undefined) result.set(key, read);
    }
    return result;
  }

  problem(message: string): void {
    this.#reading.assertOpen();
    this.#reading.report(this.path, this.#offset, message);
  }

  #open(): Content | undefined {
    this.#reading.assertOpen();
    return this.#node;
  }
}

/** The mapping's pairs by key, in source order; duplicate and non-string keys are left to `checkKeys`. */
function pairsByKey(node: YAMLMap): Map<string, Pair> {
  const pairs = new Map<string, Pair>();
  for (const pair of node.items) {
    const key = keyString(pair.key);
    if (key !== undefined && !pairs.has(key)) pairs.set(key, pair);
  }
  return pairs;
}

/** A key as written: plain scalars by their source (`443`, `true`), quoted ones by their value. */
function keyString(key: unknown): string | undefined {
  if (!isScalar(key)) return undefined;
  if (typeof key.value === "string") return key.value;
  if (key.value === null && (key.source === undefined || key.source === "")) return undefined;
  return key.source ?? String(key.value);
}

function integerValue(node: Content): number | undefined {
  if (!isScalar(node) || typeof node.value !== "number" || !Number.isSafeInteger(node.value)) {
    return undefined;
  }
  const writtenAsInteger = node.type === "PLAIN"
    ? INTEGER_SOURCE.test(node.source ?? "")
    : node.tag === INT_TAG;
  return writtenAsInteger ? node.value : undefined;
}

/** How a value is shown after "got": plain scalars as written, in quotes (`"lots"`, `"443.5"`). */
function describe(node: unknown): string {
  if (node === null) return "an empty value";
  if (isMap(node)) return "a mapping";
  if (isSeq(node)) return "a list";
  if (isAlias(node)) return "an alias";
  if (!isScalar(node)) return "an unsupported value";
  if (node.value === null) return "an empty value";
  if (node.type === "BLOCK_LITERAL" || node.type === "BLOCK_FOLDED") return "a block string";
  if (node.type === "QUOTE_DOUBLE" || node.type === "QUOTE_SINGLE") {
    return `the quoted string ${JSON.stringify(shorten(String(node.value)))}`;
  }
  return JSON.stringify(shorten(node.source ?? String(node.value)));
}

function shorten(text: string): string {
  return text.length > MAX_SHOWN_LENGTH ? `${text.slice(0, MAX_SHOWN_LENGTH)}…` : text;
}

function start(node: unknown, fallback: number): number {
  if (node !== null && typeof node === "object" && "range" in node && Array.isArray(node.range)) {
    const offset: unknown = node.range[0];
    if (typeof offset === "number") return offset;
  }
  return fallback;
}

function joinKey(parent: string, key: string): string {
  const segment = PLAIN_KEY.test(key) ? key : JSON.stringify(key);
  return parent === "" ? segment : `${parent}.${segment}`;
}

/**
 * The read key an unknown one most likely meant: the same but for case; else one it is the start of (an
 * abbreviation such as `idleTimeout`, six characters at least); else the nearest within a few edits, two or
 * one per five characters of the longer key (`idleTimeoutSecs`).
 */
function suggestKey(unknown: string, known: ReadonlySet<string>): string | undefined {
  const typed = unknown.toLowerCase();
  let best: { key: string; distance: number } | undefined;
  for (const key of known) {
    const candidate = key.toLowerCase();
    const allowed = Math.max(2, Math.floor(Math.max(candidate.length, typed.length) / 5));
    const distance = candidate === typed
      ? 0
      : typed.length >= 6 && candidate.startsWith(typed)
      ? 1
      : editDistance(candidate, typed, allowed);
    if (distance <= allowed && (best === undefined || distance < best.distance)) best = { key, distance };
  }
  return best?.key;
}

/** Levenshtein distance of `a` and `b`, or Infinity when their lengths alone differ by more than `limit`. */
function editDistance(a: string, b: string, limit: number): number {
  if (Math.abs(a.length - b.length) > limit) return Infinity;
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j] + 1, current[j - 1] + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length];
}
