import { connect } from 'node:net';

/**
 * Resolves when something accepts TCP connections on host:port; otherwise rejects with
 * `help`, so that a missing broker FAILS the suite with instructions (never skips it).
 */
export function requireListening(host: string, port: number, help: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    const fail = (why: string): void => {
      socket.destroy();
      reject(new Error(`nothing answers on ${host}:${port} (${why}). ${help}`));
    };
    socket.setTimeout(2000, () => fail('timeout'));
    socket.once('error', (err) => fail(err.message));
    socket.once('connect', () => {
      socket.end();
      resolve();
    });
  });
}
