// Admin steps of tests/kafka/cluster that Kafka's own tools would need one JVM start each
// for. Run as a single-file source program on the broker's classpath:
//   java -cp 'LIBS/*' ClusterAdmin.java wait BOOTSTRAP BROKERS TIMEOUT_S
//   java -cp 'LIBS/*' ClusterAdmin.java topics BOOTSTRAP PARTITIONS REPLICATION MIN_INSYNC TOPIC...
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.errors.TopicExistsException;

public class ClusterAdmin {
    static Admin admin(String bootstrap) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "10000");
        p.put(AdminClientConfig.RETRY_BACKOFF_MS_CONFIG, "200");
        return Admin.create(p);
    }

    /** Waits until every address of BOOTSTRAP answers metadata listing BROKERS brokers (or more). */
    static void waitForBrokers(String bootstrap, int brokers, long timeoutS) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutS);
        for (String address : bootstrap.split(",")) {
            String last = "no answer";
            while (true) {
                try (Admin a = admin(address)) {
                    Collection<Node> nodes = a.describeCluster().nodes().get(5, TimeUnit.SECONDS);
                    if (nodes.size() >= brokers) {
                        break;
                    }
                    last = nodes.size() + " of " + brokers + " brokers in its metadata";
                } catch (Exception e) {
                    last = e.toString();
                }
                if (System.nanoTime() > deadline) {
                    System.err.println("broker " + address + " does not serve metadata: " + last);
                    System.exit(1);
                }
                Thread.sleep(200);
            }
        }
    }

    /** Creates TOPICs (existing ones are left as they are) and waits until each has leaders. */
    static void createTopics(String bootstrap, int partitions, short replication, String minInsync,
                             List<String> names) throws Exception {
        try (Admin a = admin(bootstrap)) {
            List<NewTopic> topics = new ArrayList<>();
            for (String name : names) {
                topics.add(new NewTopic(name, partitions, replication)
                        .configs(Map.of("min.insync.replicas", minInsync)));
            }
            for (Map.Entry<String, ?> e : a.createTopics(topics).values().entrySet()) {
                try {
                    ((org.apache.kafka.common.KafkaFuture<?>) e.getValue()).get();
                } catch (ExecutionException ex) {
                    if (!(ex.getCause() instanceof TopicExistsException)) {
                        throw new RuntimeException("cannot create " + e.getKey() + ": " + ex.getCause(), ex);
                    }
                }
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (true) {
                boolean led = true;
                try {
                    for (TopicDescription d : a.describeTopics(names).allTopicNames().get().values()) {
                        for (TopicPartitionInfo p : d.partitions()) {
                            led &= p.leader() != null && !p.leader().isEmpty();
                        }
                    }
                } catch (ExecutionException e) {
                    led = false;
                }
                if (led) {
                    return;
                }
                if (System.nanoTime() > deadline) {
                    throw new RuntimeException("topics created but some partitions have no leader after 60 s");
                }
                Thread.sleep(200);
            }
        }
    }

    public static void main(String[] args) throws Exception {
        switch (args.length > 0 ? args[0] : "") {
            case "wait" -> waitForBrokers(args[1], Integer.parseInt(args[2]), Long.parseLong(args[3]));
            case "topics" -> createTopics(args[1], Integer.parseInt(args[2]), Short.parseShort(args[3]), args[4],
                    List.of(args).subList(5, args.length));
            default -> {
                System.err.println("usage: ClusterAdmin wait|topics ...");
                System.exit(2);
            }
        }
    }
}
