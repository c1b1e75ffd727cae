/**
 * Test-only builder of TLS ClientHello bytes: a chosen SNI (or none), ECH, padding, a post-quantum key share,
 * split into records at chosen sizes, with helpers that make one length field lie.
 *
 * @module
 */

/** What goes into a built ClientHello; every field is optional. */
export interface HelloSpec {
  /** host_name to send; absent (and no `serverNameEntries`) → no server_name extension. */
  serverName?: string;
  /** Raw server_name_list entries, for hostile lists (two names, other name types, non-ASCII bytes). */
  serverNameEntries?: ReadonlyArray<{ nameType: number; name: Uint8Array }>;
  /** Adds an encrypted_client_hello (0xfe0d) extension of the "outer" form. */
  ech?: boolean;
  /** Adds a padding extension (21) with this many zero bytes. */
  paddingBytes?: number;
  /** Adds an X25519MLKEM768 (0x11ec) key share of this many bytes (Chrome sends 1,216) before the X25519 one. */
  postQuantumShareBytes?: number;
  /** Appended after the built-in extensions, in order (duplicates allowed, on purpose). */
  extraExtensions?: ReadonlyArray<{ type: number; data: Uint8Array }>;
  /** An SSLv3-style hello: no extensions block at all. */
  omitExtensions?: boolean;
  /** legacy_session_id length; default 32 (TLS 1.3 middlebox compatibility mode). */
  sessionIdBytes?: number;
  /** legacy_version; default 0x0303. */
  legacyVersion?: number;
  /** Raw cipher_suites vector contents; default four suites. */
  cipherSuites?: Uint8Array;
  /** Raw compression_methods vector contents; default `[0]` (null). */
  compressionMethods?: Uint8Array;
}

/** Length fields `withLength` can make lie. */
export type LengthField =
  | "handshake"
  | "session_id"
  | "cipher_suites"
  | "compression_methods"
  | "extensions"
  | "first_extension"
  | "server_name_list"
  | "host_name";

/** A built handshake message and where its length fields are. */
export interface BuiltHello {
  message: Uint8Array;
  fields: Partial<Record<LengthField, { offset: number; width: 1 | 2 | 3 }>>;
}

export const EXTENSION_SERVER_NAME = 0x0000;
export const EXTENSION_PADDING = 0x0015;
export const EXTENSION_KEY_SHARE = 0x0033;
export const EXTENSION_ECH = 0xfe0d;
const GROUP_X25519 = 0x001d;
const GROUP_X25519_MLKEM768 = 0x11ec;

/** A byte-writer that remembers where the length prefixes it wrote are. */
class Writer {
  readonly #bytes: number[] = [];

  get length(): number {
    return this.#bytes.length;
  }

  u8(value: number): this {
    this.#bytes.push(value & 0xff);
    return this;
  }

  u16(value: number): this {
    return this.u8(value >> 8).u8(value);
  }

  u24(value: number): this {
    return this.u8(value >> 16).u8(value >> 8).u8(value);
  }

  raw(bytes: ArrayLike<number>): this {
    for (let i = 0; i < bytes.length; i++) this.#bytes.push(bytes[i]);
    return this;
  }

  /** Writes a `width`-byte length prefix then `body`; returns the offset of the prefix. */
  vector(width: 1 | 2 | 3, body: ArrayLike<number>): number {
    const at = this.length;
    if (width === 1) this.u8(body.length);
    else if (width === 2) this.u16(body.length);
    else this.u24(body.length);
    this.raw(body);
    return at;
  }

  toBytes(): Uint8Array {
    return Uint8Array.from(this.#bytes);
  }
}

function filled(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (seed + i * 31) & 0xff;
  return bytes;
}

function u16s(values: readonly number[]): Uint8Array {
  const w = new Writer();
  for (const value of values) w.u16(value);
  return w.toBytes();
}

function serverNameExtension(entries: ReadonlyArray<{ nameType: number; name: Uint8Array }>): {
  data: Uint8Array;
  listOffset: number;
  hostNameOffset: number;
} {
  const list = new Writer();
  const entryOffsets: number[] = [];
  for (const { nameType, name } of entries) {
    list.u8(nameType);
    entryOffsets.push(list.vector(2, name));
  }
  const data = new Writer();
  const listOffset = data.vector(2, list.toBytes());
  return { data: data.toBytes(), listOffset, hostNameOffset: 2 + (entryOffsets[0] ?? 0) };
}

function keyShareExtension(postQuantumShareBytes: number | undefined): Uint8Array {
  const shares = new Writer();
  if (postQuantumShareBytes !== undefined) {
    shares.u16(GROUP_X25519_MLKEM768);
    shares.vector(2, filled(postQuantumShareBytes, 7));
  }
  shares.u16(GROUP_X25519);
  shares.vector(2, filled(32, 11));
  const data = new Writer();
  data.vector(2, shares.toBytes());
  return data.toBytes();
}

function echOuterExtension(): Uint8Array {
  // ECHClientHello outer: type 0, HPKE suite (KDF 1, AEAD 1), config_id, enc<0..2^16-1>, payload<1..2^16-1>.
  const data = new Writer().u8(0).u16(0x0001).u16(0x0001).u8(0x2a);
  data.vector(2, filled(32, 3));
  data.vector(2, filled(144, 5));
  return data.toBytes();
}

/**
 * Builds a ClientHello handshake message (header included) and records where its length fields are.
 *
 * @example
 * ```ts
 * const { message } = buildClientHelloMessage({ serverName: "app.example.com", ech: true });
 * ```
 */
export function buildClientHelloMessage(spec: HelloSpec = {}): BuiltHello {
  const fields: BuiltHello["fields"] = {};
  const body = new Writer();
  body.u16(spec.legacyVersion ?? 0x0303).raw(filled(32, 1));
  fields.session_id = { offset: 4 + body.vector(1, filled(spec.sessionIdBytes ?? 32, 9)), width: 1 };
  const cipherSuites = spec.cipherSuites ?? u16s([0x1301, 0x1302, 0x1303, 0xc02f]);
  fields.cipher_suites = { offset: 4 + body.vector(2, cipherSuites), width: 2 };
  fields.compression_methods = { offset: 4 + body.vector(1, spec.compressionMethods ?? [0]), width: 1 };

  if (!spec.omitExtensions) {
    const extensions: Array<{ type: number; data: Uint8Array }> = [];
    let serverName: ReturnType<typeof serverNameExtension> | undefined;
    const entries = spec.serverNameEntries ??
      (spec.serverName === undefined
        ? undefined
        : [{ nameType: 0, name: new TextEncoder().encode(spec.serverName) }]);
    if (entries !== undefined) {
      serverName = serverNameExtension(entries);
      extensions.push({ type: EXTENSION_SERVER_NAME, data: serverName.data });
    }
    extensions.push({ type: 0x000a, data: u16s([4, GROUP_X25519, 0x0017]) }); // supported_groups
    extensions.push({ type: 0x000d, data: u16s([4, 0x0403, 0x0804]) }); // signature_algorithms
    extensions.push({ type: 0x002b, data: Uint8Array.of(4, 0x03, 0x04, 0x03, 0x03) }); // supported_versions
    extensions.push({ type: 0x002d, data: Uint8Array.of(1, 1) }); // psk_key_exchange_modes
    extensions.push({ type: EXTENSION_KEY_SHARE, data: keyShareExtension(spec.postQuantumShareBytes) });
    if (spec.ech) extensions.push({ type: EXTENSION_ECH, data: echOuterExtension() });
    if (spec.paddingBytes !== undefined) {
      extensions.push({ type: EXTENSION_PADDING, data: new Uint8Array(spec.paddingBytes) });
    }
    extensions.push(...(spec.extraExtensions ?? []));

    const block = new Writer();
    let firstExtensionOffset = -1;
    let serverNameDataOffset = -1;
    for (const { type, data } of extensions) {
      block.u16(type);
      const at = block.vector(2, data);
      if (firstExtensionOffset < 0) firstExtensionOffset = at;
      if (type === EXTENSION_SERVER_NAME && serverNameDataOffset < 0) serverNameDataOffset = at + 2;
    }
    const blockOffset = body.vector(2, block.toBytes());
    fields.extensions = { offset: 4 + blockOffset, width: 2 };
    if (firstExtensionOffset >= 0) {
      fields.first_extension = { offset: 4 + blockOffset + 2 + firstExtensionOffset, width: 2 };
    }
    if (serverName !== undefined && serverNameDataOffset >= 0) {
      const base = 4 + blockOffset + 2 + serverNameDataOffset;
      fields.server_name_list = { offset: base + serverName.listOffset, width: 2 };
      fields.host_name = { offset: base + serverName.hostNameOffset, width: 2 };
    }
  }

  const message = new Writer().u8(1);
  message.vector(3, body.toBytes());
  fields.handshake = { offset: 1, width: 3 };
  return { message: message.toBytes(), fields };
}

/**
 * Wraps a handshake message into handshake records. `recordSizes` are payload sizes used in turn (cycling);
 * a single number splits evenly. Optional `trailing` bytes are appended after the last record.
 */
export function toRecords(
  message: Uint8Array,
  recordSizes: number | readonly number[] = 16384,
  trailing: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const sizes = typeof recordSizes === "number" ? [recordSizes] : recordSizes;
  const out = new Writer();
  for (let offset = 0, i = 0; offset < message.length; i++) {
    const size = Math.min(sizes[i % sizes.length], message.length - offset);
    out.u8(22).u16(0x0301);
    out.vector(2, message.subarray(offset, offset + size));
    offset += size;
  }
  out.raw(trailing);
  return out.toBytes();
}

/** Builds a ClientHello and wraps it in records (one record unless `recordSizes` says otherwise). */
export function buildClientHello(
  spec: HelloSpec = {},
  recordSizes: number | readonly number[] = 16384,
): Uint8Array {
  return toRecords(buildClientHelloMessage(spec).message, recordSizes);
}

/** A copy of the built message whose `field` length says `value` instead of the truth. */
export function withLength(built: BuiltHello, field: LengthField, value: number): Uint8Array {
  const location = built.fields[field];
  if (location === undefined) throw new Error(`the built hello has no ${field} length field`);
  if (!Number.isInteger(value) || value < 0 || value >= 2 ** (8 * location.width)) {
    throw new RangeError(`${value} does not fit the ${location.width}-byte ${field} length field`);
  }
  const message = built.message.slice();
  for (let i = 0; i < location.width; i++) {
    message[location.offset + i] = (value >> (8 * (location.width - 1 - i))) & 0xff;
  }
  return message;
}

/** The current value of a length field of the built message. */
export function lengthOf(built: BuiltHello, field: LengthField): number {
  const location = built.fields[field];
  if (location === undefined) throw new Error(`the built hello has no ${field} length field`);
  let value = 0;
  for (let i = 0; i < location.width; i++) value = (value << 8) | built.message[location.offset + i];
  return value;
}

/** A copy of `records` whose record number `index` (from 0) declares `length` bytes. */
export function withRecordLength(records: Uint8Array, index: number, length: number): Uint8Array {
  const copy = records.slice();
  let offset = 0;
  for (let i = 0; i < index; i++) offset += 5 + ((copy[offset + 3] << 8) | copy[offset + 4]);
  copy[offset + 3] = length >> 8;
  copy[offset + 4] = length & 0xff;
  return copy;
}

/**
 * The handshake message carried by the leading handshake records of `records` (as a real client sent them),
 * so it can be re-split differently.
 */
export function handshakeMessageOf(records: Uint8Array): Uint8Array {
  const payload = new Writer();
  let needed = Infinity;
  for (let offset = 0; offset + 5 <= records.length && payload.length < needed;) {
    const length = (records[offset + 3] << 8) | records[offset + 4];
    payload.raw(records.subarray(offset + 5, offset + 5 + length));
    offset += 5 + length;
    const bytes = payload.toBytes();
    if (bytes.length >= 4) needed = 4 + ((bytes[1] << 16) | (bytes[2] << 8) | bytes[3]);
  }
  if (payload.length < needed) throw new Error("the records do not hold a whole handshake message");
  return payload.toBytes().subarray(0, needed);
}
