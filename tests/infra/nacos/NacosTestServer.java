import com.alibaba.nacos.NacosServerBasicApplication;
import com.alibaba.nacos.NacosServerWebApplication;
import com.alibaba.nacos.core.listener.startup.NacosStartUp;
import com.alibaba.nacos.core.listener.startup.NacosStartUpManager;
import com.alibaba.nacos.sys.env.DeploymentType;
import com.alibaba.nacos.sys.env.EnvUtil;
import org.springframework.boot.WebApplicationType;
import org.springframework.boot.builder.SpringApplicationBuilder;

/**
 * Starts a Nacos server for the tests: the core and server-web phases of Nacos 3's boot
 * (as its NacosBootstrap does), without the console. Everything else (standalone mode,
 * nacos.home, ports, auth) comes from -D properties and ${nacos.home}/conf set by
 * tests/infra/nacos_server.py.
 */
public final class NacosTestServer {
    private NacosTestServer() {
    }

    public static void main(String[] args) {
        EnvUtil.setDeploymentType(DeploymentType.getType(
                System.getProperty("nacos.deployment.type", "server")));
        NacosStartUpManager.start(NacosStartUp.CORE_START_UP_PHASE);
        var core = new SpringApplicationBuilder(NacosServerBasicApplication.class)
                .web(WebApplicationType.NONE)
                .run(args);
        NacosStartUpManager.start(NacosStartUp.WEB_START_UP_PHASE);
        new SpringApplicationBuilder(NacosServerWebApplication.class)
                .parent(core)
                .run(args);
        System.out.println("NACOS-TEST-SERVER-READY");
    }
}
