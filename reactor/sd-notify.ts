/**
 * systemd's readiness protocol (sd_notify(3)), for `Type=notify` units: when
 * $NOTIFY_SOCKET names a Unix datagram socket (a path, or '@' + an abstract
 * name), state strings such as "READY=1" are sent to it as one datagram each.
 * Without $NOTIFY_SOCKET nothing is sent. A failure to notify is reported to
 * the caller (logged), never fatal: the target serves either way.
 * Thread: main (reactor).
 */
import { native } from '../bindings';

/**
 * Send `state` ("READY=1", "STOPPING=1", "STATUS=...": newline-separated
 * assignments) to $NOTIFY_SOCKET. Returns false when no manager listens
 * (NOTIFY_SOCKET unset), true when sent; throws the send's errno error.
 */
export function sdNotify(state: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const socket = env.NOTIFY_SOCKET;
  if (socket === undefined || socket === '') return false;
  if (!socket.startsWith('/') && !socket.startsWith('@')) {
    throw new Error(`NOTIFY_SOCKET=${socket} is neither an absolute path nor an abstract ('@') address`);
  }
  native.unixSendDatagram(socket, Buffer.from(state, 'utf8'));
  return true;
}
