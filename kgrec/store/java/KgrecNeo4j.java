import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Stream;
import org.neo4j.configuration.Config;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.Direction;
import org.neo4j.graphdb.Label;
import org.neo4j.graphdb.Node;
import org.neo4j.graphdb.Relationship;
import org.neo4j.graphdb.RelationshipType;
import org.neo4j.graphdb.Transaction;
import org.neo4j.io.ByteUnit;
import org.neo4j.io.fs.DefaultFileSystemAbstraction;
import org.neo4j.io.fs.FileSystemAbstraction;
import org.neo4j.kernel.api.procedure.GlobalProcedures;
import org.neo4j.kernel.impl.security.User;
import org.neo4j.kernel.internal.GraphDatabaseAPI;
import org.neo4j.logging.NullLogProvider;
import org.neo4j.memory.EmptyMemoryTracker;
import org.neo4j.procedure.Context;
import org.neo4j.procedure.Description;
import org.neo4j.procedure.Mode;
import org.neo4j.procedure.Name;
import org.neo4j.procedure.Procedure;
import org.neo4j.server.security.SecureHasher;
import org.neo4j.server.security.SystemGraphCredential;
import org.neo4j.server.security.auth.CommunitySecurityModule;
import org.neo4j.server.security.auth.FileUserRepository;

/**
 * The managed local Neo4j: a Community DBMS with only the Bolt connector, on the
 * address given, plus kgrec's bulk-write procedures.
 * Usage: KgrecNeo4j HOME HOST PORT PAGECACHE_MB PASSWORD_FILE
 *
 * Auth is on: the user neo4j has the password in PASSWORD_FILE (kgrec writes it, mode
 * 0600). The password travels in a file, not on the command line, which every local
 * user can read in /proc. LOAD CSV cannot read local files (file:// URLs).
 * A SIGTERM runs the shutdown hook, which closes the store cleanly.
 */
public class KgrecNeo4j {
    public static final String AUTH_USER = "neo4j";

    public static void main(String[] args) throws Exception {
        if (args.length != 5) {
            System.err.println("usage: KgrecNeo4j HOME HOST PORT PAGECACHE_MB PASSWORD_FILE");
            System.exit(2);
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        String password = Files.readString(Path.of(args[4]), StandardCharsets.UTF_8).strip();
        writeInitialPassword(home, password);
        DatabaseManagementService dbms = new DatabaseManagementServiceBuilder(home)
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress(args[1], Integer.parseInt(args[2])))
                .setConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.mebiBytes(Long.parseLong(args[3])))
                .setConfig(GraphDatabaseSettings.auth_enabled, true)
                .setConfig(GraphDatabaseSettings.allow_file_urls, false)
                .build();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            dbms.shutdown();
            System.out.println("kgrec-neo4j stopped");
        }));
        GraphDatabaseAPI db = (GraphDatabaseAPI) dbms.database(GraphDatabaseSettings.DEFAULT_DATABASE_NAME);
        db.getDependencyResolver().resolveDependency(GlobalProcedures.class).registerProcedure(BulkWriter.class);
        // kgrec waits for this line, not only for the open port: by now the shutdown hook
        // and the procedure are in place.
        System.out.println("kgrec-neo4j ready");
        Thread.currentThread().join();
    }

    /**
     * Writes data/dbms/auth.ini, what `neo4j-admin dbms set-initial-password` writes. The
     * system database takes the password from it while it starts, before Bolt opens, so
     * there is no moment when neo4j/neo4j (the default) is accepted. It applies to a new
     * store, and to an older one whose neo4j user still has the default password (a store
     * kgrec ran with auth off); a store whose password was already set keeps it.
     */
    static void writeInitialPassword(Path home, String password) throws Exception {
        if (password.isEmpty()) {
            throw new IllegalArgumentException("The password file is empty.");
        }
        Config config = Config.newBuilder().set(GraphDatabaseSettings.neo4j_home, home).build();
        Path authIni = CommunitySecurityModule.getInitialUserRepositoryFile(config);
        try (FileSystemAbstraction fs = new DefaultFileSystemAbstraction()) {
            fs.mkdirs(authIni.getParent());
            if (fs.fileExists(authIni)) {
                fs.deleteFile(authIni);  // one left by an earlier start would hold a second neo4j
            }
            FileUserRepository users = new FileUserRepository(
                    fs, authIni, NullLogProvider.getInstance(), EmptyMemoryTracker.INSTANCE);
            users.start();
            SystemGraphCredential credential = SystemGraphCredential.createCredentialForPassword(
                    password.getBytes(StandardCharsets.UTF_8), new SecureHasher());
            users.create(new User(AUTH_USER, null, credential, false, false));
            users.shutdown();
        }
    }

    /**
     * kgrec's bulk writers: the same MERGEs as store/queries/write_interactions.cypher and
     * write_relations.cypher, through the Core API. Cypher interprets every row of an UNWIND
     * expression by expression; here a row is a few map lookups, which loads about twice as
     * fast. The Python side uses them when the server has them and falls back to Cypher.
     */
    public static class BulkWriter {
        private static final RelationshipType INTERACTED = RelationshipType.withName("INTERACTED");
        private static final Label USER = Label.label("User");
        private static final Label PRODUCT = Label.label("Product");

        @Context
        public Transaction tx;

        public static class Written {
            public long created;
            public long updated;

            public Written(long created, long updated) {
                this.created = created;
                this.updated = updated;
            }
        }

        @Procedure(name = "kgrec.mergeInteractions", mode = Mode.WRITE)
        @Description("kgrec.mergeInteractions(rows): for each [userElementId, productElementId, event, timestamp, weight, value] "
                + "MERGE (u)-[r:INTERACTED {event, timestamp}]->(p) SET r.weight = weight, r.value = value.")
        public Stream<Written> mergeInteractions(@Name("rows") List<List<Object>> rows) {
            Map<String, Node> nodes = new HashMap<>();
            Map<String, Map<String, Relationship>> byUser = new HashMap<>();
            long created = 0;
            long updated = 0;
            Map<String, Node> products = new HashMap<>();
            for (List<Object> row : rows) {
                String userId = (String) row.get(0);
                String productId = (String) row.get(1);
                Object event = row.get(2);
                Object timestamp = row.get(3);
                Node user = nodes.computeIfAbsent(userId, id -> find(USER, id));
                Node product = products.computeIfAbsent(productId, id -> find(PRODUCT, id));
                Map<String, Relationship> existing = byUser.computeIfAbsent(userId, id -> existingInteractions(user));
                String key = interactionKey(product.getElementId(), event, timestamp);
                Relationship relationship = existing.get(key);
                if (relationship == null) {
                    relationship = user.createRelationshipTo(product, INTERACTED);
                    relationship.setProperty("event", event);
                    relationship.setProperty("timestamp", timestamp);
                    existing.put(key, relationship);
                    created++;
                } else {
                    updated++;
                }
                set(relationship, "weight", row.get(4));
                set(relationship, "value", row.get(5));
            }
            return Stream.of(new Written(created, updated));
        }

        @Procedure(name = "kgrec.mergeProductRelations", mode = Mode.WRITE)
        @Description("kgrec.mergeProductRelations(type, rows): for each [productId, relatedProductId] "
                + "MERGE (a:Product {id: productId})-[:type]->(b:Product {id: relatedProductId}).")
        public Stream<Written> mergeProductRelations(@Name("type") String type, @Name("rows") List<List<Object>> rows) {
            RelationshipType relationType = RelationshipType.withName(type);
            Map<String, Node> products = new HashMap<>();
            Map<String, Set<String>> linked = new HashMap<>();
            long created = 0;
            long existing = 0;
            for (List<Object> row : rows) {
                String fromId = (String) row.get(0);
                Node from = products.computeIfAbsent(fromId, id -> find(PRODUCT, id));
                Node to = products.computeIfAbsent((String) row.get(1), id -> find(PRODUCT, id));
                Set<String> targets = linked.computeIfAbsent(fromId, id -> existingTargets(from, relationType));
                if (targets.add(to.getElementId())) {
                    from.createRelationshipTo(to, relationType);
                    created++;
                } else {
                    existing++;
                }
            }
            return Stream.of(new Written(created, existing));
        }

        /** Where the product's relationships of this type lead, read under its write lock. */
        private Set<String> existingTargets(Node product, RelationshipType type) {
            tx.acquireWriteLock(product);
            Set<String> targets = new HashSet<>();
            for (Relationship r : product.getRelationships(Direction.OUTGOING, type)) {
                targets.add(r.getEndNode().getElementId());
            }
            return targets;
        }

        /** The node, or an error: unlike Cypher's MATCH, which would skip the row silently, a
         *  missing node fails the batch (kgrec validates every id before it writes). */
        private Node find(Label label, String id) {
            Node node = tx.findNode(label, "id", id);
            if (node == null) {
                throw new IllegalArgumentException("No (:" + label.name() + " {id: '" + id + "'}) in the graph: write it first.");
            }
            return node;
        }

        /** The user's INTERACTED relationships by (product, event, timestamp), read under the
         *  user's write lock, so a concurrent writer cannot add the same one twice. */
        private Map<String, Relationship> existingInteractions(Node user) {
            tx.acquireWriteLock(user);
            Map<String, Relationship> existing = new HashMap<>();
            for (Relationship r : user.getRelationships(Direction.OUTGOING, INTERACTED)) {
                Object event = r.getProperty("event", null);
                Object timestamp = r.getProperty("timestamp", null);
                if (event != null && timestamp != null) {  // Cypher's MERGE would not match one without them
                    existing.put(interactionKey(r.getEndNode().getElementId(), event, timestamp), r);
                }
            }
            return existing;
        }

        /** MERGE's key; a whole-number float counts as that integer, as Cypher's 5 = 5.0 does. */
        private static String interactionKey(String productElementId, Object event, Object timestamp) {
            if (timestamp instanceof Double d && d == Math.rint(d) && !Double.isInfinite(d)) {
                timestamp = d.longValue();
            }
            return productElementId + '\u0000' + event + '\u0000' + timestamp;
        }

        /** Cypher's SET: a null value removes the property. */
        private static void set(Relationship relationship, String key, Object value) {
            if (value != null) {
                relationship.setProperty(key, value);
            } else if (relationship.hasProperty(key)) {
                relationship.removeProperty(key);
            }
        }
    }
}
