// Readiness probe for the single-node Kafka broker started by scripts/services.sh.
//
//   java -cp 'libs/*:classes' KafkaReady <bootstrap> <timeoutSeconds>
//
// Waits for the TCP listener, then retries until the broker answers metadata requests (describeCluster lists a
// broker and a controller, listTopics succeeds), then prints a line and exits 0;
// exits 1 if that does not happen before the timeout.
import java.net.InetSocketAddress;
import java.net.Socket;
import java.util.Properties;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.common.Node;

public final class KafkaReady {
    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: KafkaReady <bootstrap-servers> <timeout-seconds>");
            System.exit(2);
        }
        String bootstrap = args[0];
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[1]));

        // Wait for the listener with plain TCP connects first: an admin client that
        // starts against a closed port backs off and makes readiness slower.
        String[] hp = bootstrap.split(",")[0].split(":");
        InetSocketAddress addr = new InetSocketAddress(hp[0], Integer.parseInt(hp[1]));
        while (true) {
            try (Socket s = new Socket()) {
                s.connect(addr, 500);
                break;
            } catch (java.io.IOException e) {
                if (System.nanoTime() > deadline) {
                    System.err.println("kafka not listening at " + bootstrap + ": " + e);
                    System.exit(1);
                }
                Thread.sleep(100);
            }
        }

        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, "parley-kafka-ready");
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "2000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "3000");
        p.put(AdminClientConfig.RECONNECT_BACKOFF_MS_CONFIG, "100");
        p.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        p.put(AdminClientConfig.RETRY_BACKOFF_MS_CONFIG, "100");

        String last = "no attempt";
        try (Admin admin = Admin.create(p)) {
            while (System.nanoTime() < deadline) {
                try {
                    DescribeClusterResult dc = admin.describeCluster();
                    int brokers = dc.nodes().get(3, TimeUnit.SECONDS).size();
                    Node controller = dc.controller().get(3, TimeUnit.SECONDS);
                    int topics = admin.listTopics().names().get(3, TimeUnit.SECONDS).size();
                    if (brokers > 0 && controller != null && !controller.isEmpty()) {
                        System.out.println("kafka ready: cluster " + dc.clusterId().get()
                                + ", " + brokers + " broker(s), " + topics + " topic(s)");
                        return;
                    }
                    last = "brokers=" + brokers + " controller=" + controller;
                } catch (Exception e) {
                    last = e.getCause() != null ? e.getCause().toString() : e.toString();
                }
                Thread.sleep(200);
            }
        }
        System.err.println("kafka not ready at " + bootstrap + ": " + last);
        System.exit(1);
    }
}
