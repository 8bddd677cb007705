import net from 'node:net';

export interface TcpProxy {
  /** Where clients connect instead of the server. */
  port: number;
  /** From now on, what clients write is dropped (the server never sees it) until the next cut. */
  swallow(): void;
  /** Destroys every connection through the proxy, as a network failure would. */
  cut(): void;
  /** The server goes away: every connection is cut and new ones are refused until up(). */
  down(): Promise<void>;
  /** The server is back: connections are accepted (on the same port) again. */
  up(): Promise<void>;
  /** Connections clients opened so far. */
  connections(): number;
  close(): Promise<void>;
}

/** A TCP proxy on 127.0.0.1 to `targetPort` that a test can make lose what clients send, cut, or take down and up. */
export async function tcpProxy(targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>();
  let swallowing = false;
  let connections = 0;
  const server = net.createServer((client) => {
    connections++;
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(client).add(upstream);
    client.on('data', (d) => {
      if (!swallowing) upstream.write(d);
    });
    upstream.on('data', (d) => client.write(d));
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const destroyAll = (): void => {
    for (const s of sockets) s.destroy();
  };
  return {
    port,
    down: async () => {
      const closed = new Promise<void>((r) => server.close(() => r()));
      destroyAll();
      await closed;
    },
    up: () => new Promise<void>((r) => server.listen(port, '127.0.0.1', r)),
    swallow: () => {
      swallowing = true;
    },
    cut: () => {
      destroyAll();
      swallowing = false;
    },
    connections: () => connections,
    close: () => {
      destroyAll();
      return new Promise((r) => server.close(() => r()));
    },
  };
}
