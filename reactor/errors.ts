/**
 * The one error type of vhostd's domain code (registries, controllers, bdev
 * modules): a message for people and a stable `code` for programs. Domain
 * code never speaks JSON-RPC: the RPC layer (reactor/rpc/errors.ts) maps
 * each code to SPDK's JSON-RPC error code. Thread: any.
 */

export const ErrorCode = {
  /** A parameter value the operation cannot take (SPDK: -EINVAL). */
  Invalid: 'ERR_INVALID',
  /** Malformed parameters, as a schema would refuse them (JSON-RPC -32602). */
  InvalidParams: 'ERR_INVALID_PARAMS',
  BdevExists: 'ERR_BDEV_EXISTS',
  NoBdev: 'ERR_NO_BDEV',
  ControllerExists: 'ERR_CONTROLLER_EXISTS',
  NoController: 'ERR_NO_CONTROLLER',
  /** In use (a bdev claimed by a controller, a controller with a front-end). */
  Busy: 'ERR_BUSY',
  NoMemory: 'ERR_NO_MEMORY',
  /** A system call failed; `errno` says why. */
  System: 'ERR_SYSTEM',
  /** Something that should not happen. */
  Internal: 'ERR_INTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class VhostdError extends Error {
  /** ERR_SYSTEM: the positive errno of the failed call. */
  readonly errno?: number;

  constructor(
    readonly code: ErrorCode,
    message: string,
    options: { errno?: number; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'VhostdError';
    if (options.errno !== undefined) this.errno = options.errno;
  }
}
