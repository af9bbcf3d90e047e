import java.nio.file.Path;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.io.ByteUnit;

/**
 * The managed local Neo4j: a Community DBMS with only the Bolt connector, on the
 * address given. Usage: KgrecNeo4j HOME HOST PORT PAGECACHE_MB
 * A SIGTERM runs the shutdown hook, which closes the store cleanly.
 */
public class KgrecNeo4j {
    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: KgrecNeo4j HOME HOST PORT PAGECACHE_MB");
            System.exit(2);
        }
        DatabaseManagementService dbms = new DatabaseManagementServiceBuilder(Path.of(args[0]))
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress(args[1], Integer.parseInt(args[2])))
                .setConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.mebiBytes(Long.parseLong(args[3])))
                .build();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            dbms.shutdown();
            System.out.println("kgrec-neo4j stopped");
        }));
        System.out.println("kgrec-neo4j ready");
        Thread.currentThread().join();
    }
}
