import { useEffect, useState } from "react";
import { Badge, Button, Drawer, Grid, Layout, Menu, Space, Switch, theme, Tooltip, Typography } from "antd";
import {
  AlertOutlined,
  ApiOutlined,
  CloudUploadOutlined,
  DashboardOutlined,
  LogoutOutlined,
  MenuFoldOutlined,
  MenuOutlined,
  MenuUnfoldOutlined,
  MoonOutlined,
  PartitionOutlined,
  SafetyCertificateOutlined,
  SunOutlined,
  TeamOutlined,
  ThunderboltOutlined,
  UnorderedListOutlined,
} from "@ant-design/icons";
import { Link, Outlet, useLocation, useNavigate } from "react-router-dom";
import type { ThemeMode } from "../hooks/useTheme";
import { useConnectionState } from "../hooks/useLive";
import { useUser } from "../hooks/useAuth";
import { isAdmin, logout, type User } from "../api/auth";
import { Notifier } from "./Notifier";
import { startActivity } from "../live/activity";
import { useActiveAlerts } from "../live/alerts";

const { Header, Sider, Content } = Layout;

const ADMIN_ONLY = new Set(["/credentials", "/users"]);

const items = [
  { key: "/", icon: <DashboardOutlined />, label: <Link to="/">Overview</Link> },
  { key: "/devices", icon: <UnorderedListOutlined />, label: <Link to="/devices">Devices</Link> },
  {
    key: "/credentials",
    icon: <SafetyCertificateOutlined />,
    label: <Link to="/credentials">Credentials</Link>,
  },
  { key: "/firmware", icon: <CloudUploadOutlined />, label: <Link to="/firmware">Firmware</Link> },
  { type: "divider" as const },
  {
    key: "/automations",
    icon: <ThunderboltOutlined />,
    label: <Link to="/automations">Automations</Link>,
  },
  { key: "/alerts", icon: <AlertOutlined />, label: <Link to="/alerts">Alerts</Link> },
  { key: "/webhooks", icon: <PartitionOutlined />, label: <Link to="/webhooks">Webhooks</Link> },
  { key: "/users", icon: <TeamOutlined />, label: <Link to="/users">Users</Link> },
];

/** The navigation for this user: users and device credentials for admins only (the API
 * refuses the others anyway). */
export function menuItems(user: User | null): typeof items {
  const admin = isAdmin(user);
  return items.filter((item) => admin || !("key" in item) || !ADMIN_ONLY.has(item.key ?? ""));
}

function selectedKey(path: string): string {
  if (path === "/") return "/";
  const first = "/" + (path.split("/")[1] ?? "");
  return first;
}

export function Shell({ mode, onMode }: { mode: ThemeMode; onMode: (m: ThemeMode) => void }) {
  const screens = Grid.useBreakpoint();
  const phone = !screens.md;
  const [drawer, setDrawer] = useState(false);
  const [collapsed, setCollapsed] = useState(false);
  const location = useLocation();
  const navigate = useNavigate();
  const connection = useConnectionState();
  const user = useUser();
  const { token } = theme.useToken();
  useEffect(() => startActivity(), []);
  const alerts = useActiveAlerts();
  const menu = (
    // The light menu theme takes the container colours of the active algorithm, so the
    // sidebar is the page's own surface in both modes (the "dark" theme is navy).
    <Menu
      mode="inline"
      theme="light"
      selectedKeys={[selectedKey(location.pathname)]}
      items={menuItems(user).map((item) =>
        "key" in item && item.key === "/alerts" && alerts?.total
          ? {
              ...item,
              label: (
                <Link to="/alerts">
                  Alerts{" "}
                  <Badge count={alerts.total} size="small" data-testid="menu-alert-count" title={`${alerts.total} active`} />
                </Link>
              ),
            }
          : item,
      )}
      onClick={() => setDrawer(false)}
      aria-label="Main navigation"
    />
  );
  const live =
    connection === "open" ? (
      <Badge status="success" text="live" />
    ) : connection === "connecting" ? (
      <Badge status="processing" text="connecting" />
    ) : (
      <Badge status="error" text="reconnecting" />
    );

  return (
    <Layout style={{ minHeight: "100vh" }}>
      {!phone && (
        <Sider
          theme="light"
          width={200}
          breakpoint="lg"
          collapsible
          collapsed={collapsed}
          onCollapse={setCollapsed}
          trigger={
            // A real button: the default trigger is a div the keyboard cannot reach.
            <Button
              type="text"
              block
              aria-label={collapsed ? "Expand navigation" : "Collapse navigation"}
              icon={collapsed ? <MenuUnfoldOutlined /> : <MenuFoldOutlined />}
            />
          }
          style={{ borderRight: `1px solid ${token.colorBorderSecondary}` }}
        >
          <Brand />
          {menu}
        </Sider>
      )}
      <Drawer
        open={phone && drawer}
        onClose={() => setDrawer(false)}
        placement="left"
        width={240}
        title="IoT Platform"
        styles={{ body: { padding: 0 } }}
      >
        {menu}
      </Drawer>
      <Layout>
        <Header
          style={{
            display: "flex",
            alignItems: "center",
            gap: 12,
            padding: "0 16px",
            background: token.colorBgContainer,
            borderBottom: `1px solid ${token.colorBorderSecondary}`,
          }}
        >
          {phone && (
            <Button
              icon={<MenuOutlined />}
              aria-label="Open navigation"
              onClick={() => setDrawer(true)}
            />
          )}
          <div style={{ flex: 1 }} />
          <span data-testid="connection">{live}</span>
          <Tooltip title={mode === "dark" ? "Light mode" : "Dark mode"}>
            <Switch
              aria-label="Dark mode"
              checked={mode === "dark"}
              onChange={(dark) => onMode(dark ? "dark" : "light")}
              checkedChildren={<MoonOutlined />}
              unCheckedChildren={<SunOutlined />}
            />
          </Tooltip>
          {user && (
            <Space size={4}>
              <Typography.Text type="secondary" data-testid="user">
                {user.open ? "open mode" : `${user.username} (${user.role})`}
              </Typography.Text>
              {!user.open && (
                <Button
                  type="text"
                  icon={<LogoutOutlined />}
                  aria-label="Log out"
                  onClick={() => {
                    void logout().then(() => navigate("/login"));
                  }}
                >
                  {phone ? null : "Log out"}
                </Button>
              )}
            </Space>
          )}
        </Header>
        <Content style={{ padding: phone ? 8 : 24, minWidth: 0 }}>
          <Outlet />
        </Content>
      </Layout>
      <Notifier />
    </Layout>
  );
}

function Brand() {
  return (
    <div style={{ padding: "16px 20px", fontWeight: 600, whiteSpace: "nowrap", overflow: "hidden" }}>
      <ApiOutlined /> IoT Platform
    </div>
  );
}
