// Users and API keys, for admins (docs/security.md, docs/dashboard.md). Errors the API
// explains (the last admin, a taken name) are shown on the page, as the API words them.
import { useState } from "react";
import { Alert, App, Button, Card, Form, Input, Modal, Popconfirm, Select, Space, Table, Tabs, Tag, Tooltip, Typography } from "antd";
import { PlusOutlined } from "@ant-design/icons";
import { RelativeTime } from "../../components/RelativeTime";
import { ShownOnce } from "../../components/ShownOnce";
import { useUser } from "../../hooks/useAuth";
import { useUrlState } from "../../hooks/useUrlState";
import { errorText, useList } from "../../hooks/useList";
import type { Role } from "../../api/auth";
import {
  ROLES,
  ROLE_HELP,
  createApiKey,
  createUser,
  deleteUser,
  listApiKeys,
  listUsers,
  revokeApiKey,
  updateUser,
  type ApiKey,
  type UserCreate,
  type UserRow,
} from "./service";

const roleOptions = ROLES.map((r) => ({ value: r, label: r, title: ROLE_HELP[r] }));
const ROLE_COLOR: Record<string, string> = { admin: "red", operator: "blue", viewer: "default" };

const detail = errorText;

export default function UsersPage() {
  const [url, setUrl] = useUrlState({ tab: "users" });
  return (
    <div>
      <Typography.Title level={2}>Users and API keys</Typography.Title>
      <Tabs
        activeKey={url.tab}
        onChange={(tab) => setUrl({ tab })}
        items={[
          { key: "users", label: "Users", children: <UsersTab /> },
          { key: "keys", label: "API keys", children: <ApiKeysTab /> },
        ]}
      />
    </div>
  );
}

function ErrorLine({ error, onClose }: { error: string | null; onClose: () => void }) {
  if (!error) return null;
  return <Alert type="error" showIcon closable message={error} onClose={onClose} style={{ marginBottom: 12 }} data-testid="users-error" />;
}

export function UsersTab() {
  const me = useUser();
  const { message } = App.useApp();
  const { rows, error, setError, refresh } = useList<UserRow>(listUsers);
  const [creating, setCreating] = useState(false);
  const [passwordFor, setPasswordFor] = useState<UserRow | null>(null);

  async function act(done: string, call: () => Promise<unknown>) {
    setError(null);
    try {
      await call();
      message.success(done);
    } catch (exc) {
      setError(detail(exc));
    }
    await refresh();
  }

  return (
    <Card
      extra={
        <Button type="primary" icon={<PlusOutlined />} onClick={() => setCreating(true)}>
          New user
        </Button>
      }
    >
      <ErrorLine error={error} onClose={() => setError(null)} />
      <Table
        size="small"
        rowKey="id"
        loading={rows === null}
        dataSource={rows ?? []}
        pagination={false}
        scroll={{ x: 640 }}
        columns={[
          {
            title: "User",
            dataIndex: "username",
            render: (name: string, u: UserRow) => (
              <Space>
                {name}
                {name === me?.username && <Tag>you</Tag>}
                {u.disabled && <Tag color="default">disabled</Tag>}
              </Space>
            ),
          },
          {
            title: "Role",
            dataIndex: "role",
            render: (role: Role, u: UserRow) => (
              <Select<Role>
                size="small"
                value={role}
                style={{ width: 120 }}
                options={roleOptions}
                aria-label={`role of ${u.username}`}
                onChange={(next) => act(`${u.username} is now ${next}`, () => updateUser(u.id, { role: next }))}
              />
            ),
          },
          { title: "Created", dataIndex: "created_at", render: (t: string | null) => <RelativeTime iso={t} /> },
          {
            title: "",
            key: "actions",
            align: "right",
            render: (_: unknown, u: UserRow) => (
              <Space>
                <Button size="small" onClick={() => setPasswordFor(u)}>
                  Set password
                </Button>
                {u.username === me?.username ? (
                  <Tooltip title="You cannot delete yourself">
                    <Button size="small" danger disabled>
                      Delete
                    </Button>
                  </Tooltip>
                ) : (
                  <Popconfirm
                    title={`Delete ${u.username}?`}
                    description="They are signed out everywhere at once."
                    okText="Delete"
                    okButtonProps={{ danger: true }}
                    onConfirm={() => act(`${u.username} deleted`, () => deleteUser(u.id))}
                  >
                    <Button size="small" danger>
                      Delete
                    </Button>
                  </Popconfirm>
                )}
              </Space>
            ),
          },
        ]}
      />
      <Typography.Paragraph type="secondary" style={{ marginTop: 12, marginBottom: 0 }}>
        Viewers read everything and change nothing; operators also control devices; admins also manage users, API keys and
        device credentials. Changing a role or password signs the user out everywhere.
      </Typography.Paragraph>
      <CreateUser
        open={creating}
        onClose={() => setCreating(false)}
        onCreate={async (body) => {
          setError(null);
          try {
            await createUser(body);
            message.success(`${body.username} created`);
            setCreating(false);
            await refresh();
            return null;
          } catch (exc) {
            return detail(exc);
          }
        }}
      />
      <SetPassword
        user={passwordFor}
        onClose={() => setPasswordFor(null)}
        onSet={async (password) => {
          const u = passwordFor;
          if (!u) return null;
          try {
            await updateUser(u.id, { password });
            message.success(`Password of ${u.username} changed`);
            setPasswordFor(null);
            return null;
          } catch (exc) {
            return detail(exc);
          }
        }}
      />
    </Card>
  );
}

/** onCreate resolves to an error to show in the form, or null when done. */
function CreateUser({ open, onClose, onCreate }: { open: boolean; onClose: () => void; onCreate: (b: UserCreate) => Promise<string | null> }) {
  const [form] = Form.useForm<UserCreate>();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  return (
    <Modal open={open} title="New user" okText="Create" confirmLoading={busy} onCancel={onClose} onOk={() => form.submit()} destroyOnHidden>
      {error && <Alert type="error" showIcon message={error} style={{ marginBottom: 12 }} />}
      <Form
        form={form}
        layout="vertical"
        preserve={false}
        initialValues={{ role: "viewer" }}
        onFinish={async (v) => {
          setBusy(true);
          setError(await onCreate(v));
          setBusy(false);
        }}
      >
        <Form.Item name="username" label="Username" rules={[{ required: true }, { pattern: /^[A-Za-z0-9_.@-]{1,64}$/, message: "letters, digits and _ . @ - (up to 64)" }]}>
          <Input autoComplete="off" />
        </Form.Item>
        <Form.Item name="password" label="Password" rules={[{ required: true }, { min: 8, message: "at least 8 characters" }]}>
          <Input.Password autoComplete="new-password" />
        </Form.Item>
        <Form.Item name="role" label="Role">
          <Select options={ROLES.map((r) => ({ value: r, label: `${r}: ${ROLE_HELP[r]}` }))} aria-label="new user role" />
        </Form.Item>
      </Form>
    </Modal>
  );
}

function SetPassword({ user, onClose, onSet }: { user: UserRow | null; onClose: () => void; onSet: (p: string) => Promise<string | null> }) {
  const [form] = Form.useForm<{ password: string }>();
  const [error, setError] = useState<string | null>(null);
  return (
    <Modal open={user !== null} title={`Set the password of ${user?.username ?? ""}`} okText="Set password" onCancel={onClose} onOk={() => form.submit()} destroyOnHidden>
      {error && <Alert type="error" showIcon message={error} style={{ marginBottom: 12 }} />}
      <Form form={form} layout="vertical" preserve={false} onFinish={async (v) => setError(await onSet(v.password))}>
        <Form.Item name="password" label="New password" rules={[{ required: true }, { min: 8, message: "at least 8 characters" }]}>
          <Input.Password autoComplete="new-password" />
        </Form.Item>
        <Typography.Text type="secondary">The user is signed out everywhere and signs in with the new password.</Typography.Text>
      </Form>
    </Modal>
  );
}

export function ApiKeysTab() {
  const { message } = App.useApp();
  const { rows, error, setError, refresh } = useList<ApiKey>(listApiKeys);
  const [creating, setCreating] = useState(false);
  const [created, setCreated] = useState<string | null>(null);

  return (
    <Card
      extra={
        <Button type="primary" icon={<PlusOutlined />} onClick={() => setCreating(true)}>
          New API key
        </Button>
      }
    >
      <ErrorLine error={error} onClose={() => setError(null)} />
      <Table
        size="small"
        rowKey="id"
        loading={rows === null}
        dataSource={rows ?? []}
        pagination={false}
        scroll={{ x: 640 }}
        locale={{ emptyText: "No API keys. Integrations (Grafana, scripts) sign in with one." }}
        columns={[
          { title: "Name", dataIndex: "name" },
          { title: "Key", dataIndex: "prefix", render: (p: string) => <code>iotp_{p}_…</code> },
          { title: "Role", dataIndex: "role", render: (r: string) => <Tag color={ROLE_COLOR[r]}>{r}</Tag> },
          { title: "Created", dataIndex: "created_at", render: (t: string | null) => <RelativeTime iso={t} /> },
          { title: "Last used", dataIndex: "last_used_at", render: (t: string | null) => (t ? <RelativeTime iso={t} /> : "never") },
          {
            title: "",
            key: "actions",
            align: "right",
            render: (_: unknown, k: ApiKey) =>
              k.revoked_at ? (
                <Tag color="red">revoked</Tag>
              ) : (
                <Popconfirm
                  title={`Revoke ${k.name}?`}
                  description="It is refused at once, and live connections made with it close."
                  okText="Revoke"
                  okButtonProps={{ danger: true }}
                  onConfirm={async () => {
                    setError(null);
                    try {
                      await revokeApiKey(k.id);
                      message.success(`${k.name} revoked`);
                    } catch (exc) {
                      setError(detail(exc));
                    }
                    await refresh();
                  }}
                >
                  <Button size="small" danger>
                    Revoke
                  </Button>
                </Popconfirm>
              ),
          },
        ]}
      />
      <CreateApiKey
        open={creating}
        onClose={() => setCreating(false)}
        onCreate={async (name, role) => {
          try {
            const key = await createApiKey(name, role);
            setCreating(false);
            setCreated(key.key);
            await refresh();
            return null;
          } catch (exc) {
            return detail(exc);
          }
        }}
      />
      <ShownOnce
        secret={created}
        title="New API key"
        description={
          <>
            Send it as <code>X-API-Key: …</code> or <code>Authorization: Bearer …</code>. Only its hash is stored: it is never
            shown again (revoke it and make a new one if it is lost).
          </>
        }
        onClose={() => setCreated(null)}
        testId="api-key"
      />
    </Card>
  );
}

function CreateApiKey({ open, onClose, onCreate }: { open: boolean; onClose: () => void; onCreate: (name: string, role: Role) => Promise<string | null> }) {
  const [form] = Form.useForm<{ name: string; role: Role }>();
  const [error, setError] = useState<string | null>(null);
  return (
    <Modal open={open} title="New API key" okText="Create" onCancel={onClose} onOk={() => form.submit()} destroyOnHidden>
      {error && <Alert type="error" showIcon message={error} style={{ marginBottom: 12 }} />}
      <Form form={form} layout="vertical" preserve={false} initialValues={{ role: "viewer" }} onFinish={async (v) => setError(await onCreate(v.name, v.role))}>
        <Form.Item name="name" label="Name" rules={[{ required: true, max: 128 }]}>
          <Input placeholder="grafana" />
        </Form.Item>
        <Form.Item name="role" label="Role">
          <Select options={roleOptions} aria-label="API key role" />
        </Form.Item>
      </Form>
    </Modal>
  );
}
