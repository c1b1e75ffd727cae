/**
 * Connection limits of the relay in one primitive: total connections, connections per client IP, and
 * connections still in the handshake (sniffing) phase. Established streams stop counting against the
 * handshake limit the moment they are routed (lesson 9 of §8.2).
 *
 * @module
 */

/** The limits; each is a count of connections. */
export interface AdmissionLimits {
  readonly maxConnections: number;
  readonly maxConnectionsPerIp: number;
  readonly maxHandshakes: number;
}

/** Why a connection was refused at the door. */
export type AdmissionRefusal = "max_connections" | "max_connections_per_ip" | "max_handshakes";

/** A granted connection; release it exactly once when the connection ends. */
export interface AdmissionTicket {
  /** The connection left the handshake phase (routed or refused). Idempotent. */
  handshakeDone(): void;
  /** The connection closed. Idempotent; also ends the handshake phase. */
  release(): void;
}

/** Counts connections and refuses those over a limit. */
export class Admission {
  readonly #limits: AdmissionLimits;
  readonly #perIp = new Map<string, number>();
  #connections = 0;
  #handshakes = 0;

  constructor(limits: AdmissionLimits) {
    this.#limits = limits;
  }

  /** Open connections. */
  get connections(): number {
    return this.#connections;
  }

  /** Connections in the handshake phase. */
  get handshakes(): number {
    return this.#handshakes;
  }

  /** Admits a connection from `ip`, or says which limit refuses it. */
  admit(ip: string): AdmissionTicket | AdmissionRefusal {
    if (this.#connections >= this.#limits.maxConnections) return "max_connections";
    const fromIp = this.#perIp.get(ip) ?? 0;
    if (fromIp >= this.#limits.maxConnectionsPerIp) return "max_connections_per_ip";
    if (this.#handshakes >= this.#limits.maxHandshakes) return "max_handshakes";
    this.#connections += 1;
    this.#handshakes += 1;
    this.#perIp.set(ip, fromIp + 1);
    let inHandshake = true;
    let released = false;
    const handshakeDone = () => {
      if (!inHandshake) return;
      inHandshake = false;
      this.#handshakes -= 1;
    };
    return {
      handshakeDone,
      release: () => {
        if (released) return;
        released = true;
        handshakeDone();
        this.#connections -= 1;
        const left = (this.#perIp.get(ip) ?? 1) - 1;
        if (left === 0) this.#perIp.delete(ip);
        else this.#perIp.set(ip, left);
      },
    };
  }
}
