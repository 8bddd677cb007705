package syncline.bench;

import io.debezium.engine.ChangeEvent;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.RecordChangeEvent;
import io.debezium.engine.format.ChangeEventFormat;
import io.debezium.engine.format.Json;
import io.debezium.embedded.Connect;
import java.io.Closeable;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Drains a pre-made pgoutput slot with Debezium's embedded engine (no snapshot) and counts the
 * change events of one table until it has seen the expected number, then exits. The benchmark
 * harness times the whole process; this prints one JSON line with what it saw from inside.
 *
 * Arguments: key=value pairs: changes, host, port, user, password, dbname, slot, publication,
 * table (schema.table), offsets (a file for the offset store), format (connect: hand the
 * consumer Kafka Connect SourceRecords, the engine's cheapest form; json: serialize key and
 * value with the JSON converter, as a Kafka Connect deployment does).
 */
public final class DebeziumPeer {
  public static void main(String[] argv) throws Exception {
    Properties a = new Properties();
    for (String arg : argv) {
      int eq = arg.indexOf('=');
      if (eq < 0) throw new IllegalArgumentException("expected key=value, got " + arg);
      a.setProperty(arg.substring(0, eq), arg.substring(eq + 1));
    }
    long expected = Long.parseLong(a.getProperty("changes"));
    String table = a.getProperty("table", "public.bench");
    String topic = "peers." + table;

    Properties p = new Properties();
    p.setProperty("name", "syncline-peers-bench");
    p.setProperty("connector.class", "io.debezium.connector.postgresql.PostgresConnector");
    p.setProperty("database.hostname", a.getProperty("host", "127.0.0.1"));
    p.setProperty("database.port", a.getProperty("port", "5432"));
    p.setProperty("database.user", a.getProperty("user", "postgres"));
    p.setProperty("database.password", a.getProperty("password", ""));
    p.setProperty("database.dbname", a.getProperty("dbname"));
    p.setProperty("topic.prefix", "peers");
    p.setProperty("plugin.name", "pgoutput");
    p.setProperty("slot.name", a.getProperty("slot"));
    p.setProperty("publication.name", a.getProperty("publication"));
    p.setProperty("publication.autocreate.mode", "disabled");
    p.setProperty("table.include.list", table);
    p.setProperty("snapshot.mode", "no_data");
    p.setProperty("offset.storage", "org.apache.kafka.connect.storage.FileOffsetBackingStore");
    p.setProperty("offset.storage.file.filename", a.getProperty("offsets"));
    p.setProperty("offset.flush.interval.ms", "10000");
    // Engine defaults otherwise (max.batch.size 2048, max.queue.size 8192): what a user gets.
    for (String key : a.stringPropertyNames()) {
      if (key.startsWith("debezium.")) p.setProperty(key.substring("debezium.".length()), a.getProperty(key));
    }

    AtomicLong count = new AtomicLong();
    AtomicLong firstNanos = new AtomicLong();
    CountDownLatch done = new CountDownLatch(1);
    long start = System.nanoTime();

    Closeable engine;
    ExecutorService executor = Executors.newSingleThreadExecutor();
    if ("json".equals(a.getProperty("format", "connect"))) {
      DebeziumEngine<ChangeEvent<String, String>> e = DebeziumEngine.create(Json.class)
          .using(p)
          .notifying((List<ChangeEvent<String, String>> batch, DebeziumEngine.RecordCommitter<ChangeEvent<String, String>> committer) -> {
            for (ChangeEvent<String, String> r : batch) {
              if (topic.equals(r.destination()) && r.value() != null) seen(count, firstNanos, expected, done);
              committer.markProcessed(r);
            }
            committer.markBatchFinished();
          })
          .using((success, message, error) -> { if (!success) fail(message, error, done); })
          .build();
      executor.execute(e);
      engine = e;
    } else {
      DebeziumEngine<RecordChangeEvent<org.apache.kafka.connect.source.SourceRecord>> e = DebeziumEngine.create(ChangeEventFormat.of(Connect.class))
          .using(p)
          .notifying((List<RecordChangeEvent<org.apache.kafka.connect.source.SourceRecord>> batch,
                      DebeziumEngine.RecordCommitter<RecordChangeEvent<org.apache.kafka.connect.source.SourceRecord>> committer) -> {
            for (RecordChangeEvent<org.apache.kafka.connect.source.SourceRecord> r : batch) {
              org.apache.kafka.connect.source.SourceRecord rec = r.record();
              if (topic.equals(rec.topic()) && rec.value() != null) seen(count, firstNanos, expected, done);
              committer.markProcessed(r);
            }
            committer.markBatchFinished();
          })
          .using((success, message, error) -> { if (!success) fail(message, error, done); })
          .build();
      executor.execute(e);
      engine = e;
    }

    boolean finished = done.await(Long.parseLong(a.getProperty("timeout_s", "1800")), TimeUnit.SECONDS);
    long end = System.nanoTime();
    System.out.println("{\"changes\":" + count.get()
        + ",\"first_change_s\":" + String.format("%.3f", (firstNanos.get() == 0 ? 0 : firstNanos.get() - start) / 1e9)
        + ",\"seconds\":" + String.format("%.3f", (end - start) / 1e9) + "}");
    System.out.flush();
    engine.close();
    executor.shutdownNow();
    // The engine's threads need not wind down for the count to stand.
    Runtime.getRuntime().halt(finished && count.get() >= expected ? 0 : 1);
  }

  private static void seen(AtomicLong count, AtomicLong firstNanos, long expected, CountDownLatch done) {
    long n = count.incrementAndGet();
    if (n == 1) firstNanos.set(System.nanoTime());
    if (n >= expected) done.countDown();
  }

  private static void fail(String message, Throwable error, CountDownLatch done) {
    System.err.println("debezium engine stopped: " + message);
    if (error != null) error.printStackTrace();
    done.countDown();
  }
}
