/**
 * Parameter schemas of the JSON-RPC methods and the method definition helper.
 * Every method declares a JSON Schema for its `params` object, compiled once
 * with ajv (strict mode, all errors); a request whose params do not match gets
 * -32602 with a message naming each offending parameter, e.g.
 * `params.num_blocks: must be integer`, `params.name: is required`,
 * `params.foo: unknown parameter`. Like SPDK's spdk_json_decode_object, unknown
 * parameters are refused. Handlers receive params typed by the caller of
 * `defineMethod` and only after validation.
 *
 * Thread: main (reactor).
 */

import Ajv, { type ErrorObject, type SchemaObject } from 'ajv';
import { asRpcError, RpcCode, RpcError } from './errors';

const ajv = new Ajv({ allErrors: true, strict: true, verbose: true, coerceTypes: false, useDefaults: false });

const UUID_PATTERN = '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';

/**
 * Schema building blocks with SPDK's JSON types (spdk_json_decode_uint32 and
 * friends). 64-bit integers are limited to 2^53-1: JSON.parse would round
 * anything larger.
 */
export const s = {
  string: (): SchemaObject => ({ type: 'string' }),
  /** A non-empty name without '/' or NUL that is not "." or "..": safe as a file name. */
  fileName: (): SchemaObject => ({
    type: 'string',
    pattern: '^(?!\\.\\.?$)[^/\\u0000]+$',
    title: 'a non-empty name without "/" (not "." or "..")',
  }),
  boolean: (): SchemaObject => ({ type: 'boolean' }),
  u8: (): SchemaObject => ({ type: 'integer', minimum: 0, maximum: 0xff }),
  u16: (): SchemaObject => ({ type: 'integer', minimum: 0, maximum: 0xffff }),
  u32: (): SchemaObject => ({ type: 'integer', minimum: 0, maximum: 0xffffffff }),
  i32: (): SchemaObject => ({ type: 'integer', minimum: -0x80000000, maximum: 0x7fffffff }),
  u64: (): SchemaObject => ({ type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
  uuid: (): SchemaObject => ({ type: 'string', pattern: UUID_PATTERN, title: 'a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)' }),
};

/** The schema of a params object: these required and optional members, nothing else. */
export function paramsSchema(required: Record<string, SchemaObject>, optional: Record<string, SchemaObject> = {}): SchemaObject {
  for (const k of Object.keys(required)) {
    if (k in optional) throw new Error(`parameter ${k} is both required and optional`);
  }
  const schema: SchemaObject = {
    type: 'object',
    properties: { ...required, ...optional },
    additionalProperties: false,
  };
  const req = Object.keys(required);
  if (req.length > 0) schema.required = req;
  return schema;
}

/** Schema of a method that takes no parameters (absent, null or `{}`). */
export const NO_PARAMS: SchemaObject = paramsSchema({});

/** JSON pointer (/a/b~1c/0) → `.a["b/c"][0]`-style path after "params". */
function pointerToPath(pointer: string): string {
  if (pointer === '') return '';
  let out = '';
  for (const raw of pointer.slice(1).split('/')) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (/^\d+$/.test(seg)) out += `[${seg}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(seg)) out += `.${seg}`;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

function memberPath(base: string, name: string): string {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(name) ? `${base}.${name}` : `${base}[${JSON.stringify(name)}]`;
}

/** One human-readable line per ajv error, each naming the parameter. */
export function formatSchemaErrors(errors: ErrorObject[]): string {
  const lines: string[] = [];
  for (const e of errors) {
    const at = 'params' + pointerToPath(e.instancePath);
    let line: string;
    if (e.keyword === 'required') {
      line = `${memberPath(at, String(e.params.missingProperty))}: is required`;
    } else if (e.keyword === 'additionalProperties') {
      line = `${memberPath(at, String(e.params.additionalProperty))}: unknown parameter`;
    } else if (e.keyword === 'pattern' && e.parentSchema && typeof e.parentSchema.title === 'string') {
      line = `${at}: must be ${e.parentSchema.title}`;
    } else {
      line = `${at}: ${e.message ?? 'is invalid'}`;
    }
    if (!lines.includes(line)) lines.push(line);
  }
  return lines.join('; ');
}

/**
 * The RPC states a method may run in, as SPDK's SPDK_RPC_STARTUP /
 * SPDK_RPC_RUNTIME bits: the server is in STARTUP until framework_start_init
 * (with --wait-for-rpc; otherwise it starts in RUNTIME), and a method called
 * in a state outside its mask gets SPDK's -1 "Method may only be called ...".
 */
export const RpcState = {
  Startup: 0x1,
  Runtime: 0x2,
} as const;
export type RpcStateBit = (typeof RpcState)[keyof typeof RpcState];

/** A method the server can dispatch to. */
export interface RpcMethod {
  readonly name: string;
  /** RpcState bits this method runs in; absent: RUNTIME only (SPDK's usual registration). */
  readonly states?: number;
  /**
   * Validate `params` (undefined when the request had none or null) and run
   * the method. Throws (or rejects with) RpcError; -32602 for bad params.
   * A method made by defineMethod turns its handler's VhostdError into the
   * RpcError with SPDK's code (rpc/errors.ts).
   */
  invoke(params: unknown): unknown;
}

/**
 * Define a method: `schema` describes its params object, `handler` gets them
 * typed as P once they match. The handler's return value (or promise) is the
 * JSON-RPC result; it must be JSON-serialisable and not undefined.
 */
export function defineMethod<P>(
  name: string,
  schema: SchemaObject,
  handler: (params: P) => unknown,
  options: { states?: number } = {},
): RpcMethod {
  const validate = ajv.compile<P>(schema);
  return {
    name,
    states: options.states,
    invoke(params: unknown): unknown {
      const p = params === undefined || params === null ? {} : params;
      if (!validate(p)) {
        throw new RpcError(RpcCode.InvalidParams, formatSchemaErrors(validate.errors ?? []));
      }
      // Services throw VhostdError: the caller gets SPDK's code (RpcError) instead.
      let result: unknown;
      try {
        result = handler(p);
      } catch (err) {
        throw asRpcError(err) ?? err;
      }
      if (result instanceof Promise) return result.catch((err: unknown) => Promise.reject(asRpcError(err) ?? err));
      return result;
    },
  };
}
