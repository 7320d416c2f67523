/**
 * JSON-RPC errors: SPDK's codes, the error a method reports to its caller,
 * and the one mapping from domain errors (VhostdError codes) to those codes.
 * Only the RPC layer (server, methods, client) uses RpcError; domain code
 * throws VhostdError. Thread: main (reactor) or any client.
 */
import { ErrorCode, VhostdError } from '../errors';

/** JSON-RPC error codes, SPDK's: JSON-RPC's own and negative errno values. */
export const RpcCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
  /** SPDK_JSONRPC_ERROR_INVALID_STATE: the method is not callable in the current RPC state. */
  InvalidState: -1,
  /** -ENOENT */
  NoEntry: -2,
  /** -EBUSY */
  Busy: -16,
  /** -EEXIST */
  Exists: -17,
  /** -ENODEV */
  NoDevice: -19,
  /** -EINVAL */
  Invalid: -22,
  /** -ENOMEM */
  NoMemory: -12,
  /** -ENOSPC */
  NoSpace: -28,
} as const;

/** An error a method reports to its JSON-RPC caller as {code, message}. */
export class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
    this.name = 'RpcError';
  }
}

const RPC_CODE_OF: Record<ErrorCode, number> = {
  [ErrorCode.Invalid]: RpcCode.Invalid,
  [ErrorCode.InvalidParams]: RpcCode.InvalidParams,
  [ErrorCode.BdevExists]: RpcCode.Exists,
  [ErrorCode.NoBdev]: RpcCode.NoDevice,
  [ErrorCode.ControllerExists]: RpcCode.Exists,
  [ErrorCode.NoController]: RpcCode.NoDevice,
  [ErrorCode.Busy]: RpcCode.Busy,
  [ErrorCode.NoMemory]: RpcCode.NoMemory,
  [ErrorCode.System]: RpcCode.InternalError,
  [ErrorCode.Internal]: RpcCode.InternalError,
};

/** SPDK's JSON-RPC code for a domain error: its table entry; a system error is -errno, as SPDK reports it. */
export function rpcCodeOf(err: VhostdError): number {
  if (err.code === ErrorCode.System && err.errno !== undefined && err.errno > 0) return -err.errno;
  return RPC_CODE_OF[err.code] ?? RpcCode.InternalError;
}

/** The RpcError to report for `err`, or null when it is neither an RpcError nor a VhostdError (a bug: -32603). */
export function asRpcError(err: unknown): RpcError | null {
  if (err instanceof RpcError) return err;
  if (err instanceof VhostdError) return new RpcError(rpcCodeOf(err), err.message);
  return null;
}
