/**
 * Sans-IO splitter for a stream of concatenated JSON values, the framing
 * SPDK's JSON-RPC uses on its Unix socket: no length prefix, no delimiter,
 * one JSON object (or batch array) after another, optionally separated by
 * whitespace. `push()` takes bytes as they arrive and hands back each complete
 * top-level value's bytes; it does not parse them (JSON.parse does that, once
 * the value is complete).
 *
 * It tracks only what is needed to find where a value ends: nesting depth of
 * `{`/`[`, whether the scanner is inside a string, and whether the previous
 * byte was a backslash inside a string. Multi-byte UTF-8 sequences never
 * contain bytes below 0x80, so scanning bytes is safe across chunk and
 * character boundaries. A top-level value must be an object or an array: any
 * other first byte cannot be delimited in a stream and is a framing error, as
 * is a value longer than `maxValueBytes`. After an error the splitter is dead
 * (the stream has no resynchronisation point); the caller closes the
 * connection.
 *
 * Thread: whichever thread owns the socket (the reactor for the server, the
 * caller's thread for the client).
 */

const OPEN_BRACE = 0x7b; // {
const CLOSE_BRACE = 0x7d; // }
const OPEN_BRACKET = 0x5b; // [
const CLOSE_BRACKET = 0x5d; // ]
const QUOTE = 0x22; // "
const BACKSLASH = 0x5c; // \

/** RFC 8259 insignificant whitespace: space, tab, LF, CR. */
function isJsonWhitespace(b: number): boolean {
  return b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d;
}

export type FramingErrorReason = 'too-large' | 'not-a-json-container';

export class FramingError extends Error {
  constructor(
    readonly reason: FramingErrorReason,
    message: string,
  ) {
    super(message);
    this.name = 'FramingError';
  }
}

export interface PushResult {
  values: Buffer[];
  error: FramingError | null;
}

/** Framing state of one byte stream; owned by the thread that owns the stream. */
export class JsonStreamSplitter {
  /** Bytes of the value being accumulated that came in earlier chunks. */
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Nesting depth of the current value; 0 = between values. */
  private depth = 0;
  private inString = false;
  private escaped = false;
  private failed: FramingError | null = null;

  constructor(readonly maxValueBytes: number) {
    if (!Number.isSafeInteger(maxValueBytes) || maxValueBytes < 2) {
      throw new RangeError('maxValueBytes must be an integer >= 2');
    }
  }

  /** True while a value has started but not ended (bytes are buffered). */
  get inValue(): boolean {
    return this.depth > 0;
  }

  /**
   * Feed bytes; returns the complete top-level values found, in order, and
   * the framing error that stopped the scan, if any (values completed before
   * the error are still returned; every later call returns the same error and
   * no values).
   */
  push(chunk: Buffer): PushResult {
    if (this.failed) return { values: [], error: this.failed };
    const out: Buffer[] = [];
    // Start of the current value inside this chunk (0 when it began in an earlier chunk).
    let start = 0;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i];
      if (this.depth === 0) {
        if (isJsonWhitespace(b)) continue;
        if (b !== OPEN_BRACE && b !== OPEN_BRACKET) {
          return this.fail(
            out,
            new FramingError('not-a-json-container', `expected '{' or '[' at the start of a request, got byte 0x${b.toString(16)}`),
          );
        }
        start = i;
        this.depth = 1;
        continue;
      }
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (b === BACKSLASH) this.escaped = true;
        else if (b === QUOTE) this.inString = false;
        continue;
      }
      if (b === QUOTE) {
        this.inString = true;
      } else if (b === OPEN_BRACE || b === OPEN_BRACKET) {
        this.depth++;
      } else if (b === CLOSE_BRACE || b === CLOSE_BRACKET) {
        this.depth--;
        if (this.depth === 0) {
          const tail = chunk.subarray(start, i + 1);
          if (this.pendingBytes + tail.length > this.maxValueBytes) {
            return this.fail(out, this.tooLarge());
          }
          out.push(this.pendingBytes === 0 ? Buffer.from(tail) : Buffer.concat([...this.pending, tail]));
          this.pending = [];
          this.pendingBytes = 0;
        }
      }
      // Anything else inside a value (numbers, literals, ':' ',' whitespace) is left to JSON.parse.
    }
    if (this.depth > 0) {
      const rest = chunk.subarray(start);
      if (this.pendingBytes + rest.length > this.maxValueBytes) return this.fail(out, this.tooLarge());
      // Copy: the caller may reuse its buffer.
      this.pending.push(Buffer.from(rest));
      this.pendingBytes += rest.length;
    }
    return { values: out, error: null };
  }

  private tooLarge(): FramingError {
    return new FramingError('too-large', `request exceeds ${this.maxValueBytes} bytes`);
  }

  private fail(values: Buffer[], err: FramingError): PushResult {
    this.failed = err;
    this.pending = [];
    this.pendingBytes = 0;
    return { values, error: err };
  }
}
