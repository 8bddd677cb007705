/**
 * A custom sink into RabbitMQ: every change is published as a persistent JSON message to a
 * topic exchange with routing key `<schema>.<table>.<op>`, with publisher confirms. RabbitMQ
 * has no transactions with PostgreSQL, so `versionGatedSink` keeps the version gate and the
 * stream positions in a PostgreSQL table (PostgresGateStore), marked only after the broker
 * confirmed: a replay publishes nothing twice, and a crash between confirm and mark repeats at
 * most that one batch (each message carries `messageId` = the change's dedup key).
 */
import amqp from 'amqplib';
import { dedupKeyOf, PostgresGateStore, SynclineError, versionGatedSink, type ChangeEvent, type GatedTarget, type Sink } from 'syncline';

export interface RabbitMqSinkOptions {
  /** e.g. amqp://guest:guest@127.0.0.1:5672 */
  url: string;
  /** Topic exchange to publish to (declared durable if missing). */
  exchange: string;
  /** PostgreSQL database for the gate's versions and positions. */
  gateStoreUrl: string;
  /** Schema of the gate's tables; default syncline_gate. */
  gateSchema?: string;
}

/** The target half: publishes what the gate lets through and waits for the broker's confirms. */
export class RabbitMqTarget implements GatedTarget {
  private connection: amqp.ChannelModel | undefined;
  private channel: amqp.ConfirmChannel | undefined;

  constructor(private readonly options: Pick<RabbitMqSinkOptions, 'url' | 'exchange'>) {}

  async prepare(): Promise<void> {
    await this.open();
  }

  async write(changes: readonly ChangeEvent[]): Promise<void> {
    let channel: amqp.ConfirmChannel;
    try {
      channel = await this.open();
      for (const c of changes) {
        const routingKey = `${c.schema}.${c.table}.${c.op.toLowerCase()}`;
        channel.publish(this.options.exchange, routingKey, Buffer.from(JSON.stringify(c)), {
          persistent: true,
          contentType: 'application/json',
          messageId: dedupKeyOf('sync:{source}:{table}:{lsn}:{seq}', c),
        });
      }
      await channel.waitForConfirms();
    } catch (err) {
      // A broker that went away comes back: retry the batch (the gate marked nothing).
      await this.reset();
      throw new SynclineError('RABBITMQ_PUBLISH', `RabbitMQ publish failed: ${(err as Error).message}`, { retriable: true, cause: err });
    }
  }

  async close(): Promise<void> {
    await this.reset();
  }

  private async open(): Promise<amqp.ConfirmChannel> {
    if (this.channel) return this.channel;
    const connection = await amqp.connect(this.options.url);
    connection.on('error', () => undefined);
    const channel = await connection.createConfirmChannel();
    channel.on('error', () => undefined);
    await channel.assertExchange(this.options.exchange, 'topic', { durable: true });
    this.connection = connection;
    this.channel = channel;
    return channel;
  }

  private async reset(): Promise<void> {
    const connection = this.connection;
    this.connection = undefined;
    this.channel = undefined;
    await connection?.close().catch(() => undefined);
  }
}

/** The RabbitMQ sink: pass it as `createPipeline({ sink: rabbitMqSink({...}) })`. */
export function rabbitMqSink(options: RabbitMqSinkOptions): Sink {
  return versionGatedSink({
    store: new PostgresGateStore({ url: options.gateStoreUrl, schema: options.gateSchema ?? 'syncline_gate', sink: `rabbitmq:${options.exchange}` }),
    target: new RabbitMqTarget(options),
  });
}
