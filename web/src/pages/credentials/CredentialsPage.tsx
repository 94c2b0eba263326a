// Devices > Credentials: provisioning requests waiting for an admin, and every device's
// MQTT credentials (rotate, revoke, forget). See docs/security.md and docs/dashboard.md.
import { useEffect, useState } from "react";
import { Alert, App, Badge, Button, Card, Form, Input, Modal, Popconfirm, Space, Table, Tag, Typography } from "antd";
import { KeyOutlined } from "@ant-design/icons";
import { Link } from "react-router-dom";
import { RelativeTime } from "../../components/RelativeTime";
import { ShownOnce } from "../../components/ShownOnce";
import { errorText, useList } from "../../hooks/useList";
import { PairingCard } from "./PairingCard";
import {
  POLL_MS,
  STATUS_COLOR,
  approve,
  forget,
  issue,
  listCredentials,
  revoke,
  type Credential,
} from "./service";

const DEVICE_ID = /^[A-Za-z0-9_-]{1,64}$/;

export default function CredentialsPage() {
  const { message } = App.useApp();
  const { rows, error, setError, refresh } = useList<Credential>(listCredentials);
  const [secret, setSecret] = useState<{ device: string; password: string } | null>(null);
  const [issuing, setIssuing] = useState(false);

  useEffect(() => {
    // No live event announces a provisioning request: poll while the page is open.
    const timer = setInterval(() => void refresh(), POLL_MS);
    return () => clearInterval(timer);
  }, [refresh]);

  async function act(what: string, call: () => Promise<unknown>) {
    setError(null);
    try {
      await call();
      message.success(what);
    } catch (exc) {
      setError(errorText(exc));
    }
    await refresh();
  }

  async function rotate(deviceId: string) {
    setError(null);
    try {
      const issued = await issue(deviceId);
      setSecret({ device: issued.device_id, password: issued.password });
    } catch (exc) {
      setError(errorText(exc));
    }
    await refresh();
  }

  const pending = (rows ?? []).filter((r) => r.status === "pending");
  const others = (rows ?? []).filter((r) => r.status !== "pending");

  return (
    <div>
      <Typography.Title level={2}>Device credentials</Typography.Title>
      {error && (
        <Alert type="error" showIcon closable message={error} onClose={() => setError(null)} style={{ marginBottom: 16 }} data-testid="credentials-error" />
      )}
      <PairingCard />
      <Card
        title={
          <Space>
            Provisioning requests <Badge count={pending.length} showZero={false} />
          </Space>
        }
        style={{ marginBottom: 16 }}
        data-testid="pending"
      >
        <Table
          size="small"
          rowKey="device_id"
          loading={rows === null}
          dataSource={pending}
          pagination={false}
          locale={{
            emptyText:
              "No device is waiting. In secure mode a new device asks with the fleet provisioning secret and appears here until you approve it.",
          }}
          columns={[
            { title: "Device", dataIndex: "device_id", render: (id: string) => <code>{id}</code> },
            {
              title: "Fingerprint",
              dataIndex: "fingerprint",
              render: (f: string | null, c: Credential) => (
                <Space>
                  <code data-testid="fingerprint">{f ?? "unknown"}</code>
                  {c.conflicts > 0 && (
                    <Tag color="red" title="Requests with another secret for this id were refused: someone else may hold the fleet secret">
                      {c.conflicts} refused
                    </Tag>
                  )}
                </Space>
              ),
            },
            { title: "Asked", dataIndex: "requested_at", render: (t: string | null) => <RelativeTime iso={t} /> },
            {
              title: "",
              key: "actions",
              align: "right",
              render: (_: unknown, c: Credential) => (
                <Space>
                  <Popconfirm
                    title={`Approve ${c.device_id}?`}
                    description={
                      <>
                        Only if the device shows fingerprint <code>{c.fingerprint ?? "unknown"}</code> (its log and its setup page):
                        anyone holding the fleet secret can ask in its name.
                      </>
                    }
                    okText="Approve"
                    onConfirm={() => act(`${c.device_id} approved`, () => approve(c.device_id))}
                  >
                    <Button size="small" type="primary">
                      Approve
                    </Button>
                  </Popconfirm>
                  <Popconfirm
                    title={`Reject ${c.device_id}?`}
                    description="Its credentials are revoked: it is refused, also when it asks again, until you forget it."
                    okText="Reject"
                    okButtonProps={{ danger: true }}
                    onConfirm={() => act(`${c.device_id} rejected`, () => revoke(c.device_id))}
                  >
                    <Button size="small" danger>
                      Reject
                    </Button>
                  </Popconfirm>
                </Space>
              ),
            },
          ]}
        />
      </Card>
      <Card
        title="Credentials"
        extra={
          <Button icon={<KeyOutlined />} onClick={() => setIssuing(true)}>
            Issue credentials
          </Button>
        }
        data-testid="credentials"
      >
        <Table
          size="small"
          rowKey="device_id"
          loading={rows === null}
          dataSource={others}
          pagination={{ pageSize: 50, hideOnSinglePage: true }}
          scroll={{ x: 720 }}
          locale={{ emptyText: "No device has credentials yet." }}
          columns={[
            {
              title: "Device (MQTT username)",
              dataIndex: "device_id",
              render: (id: string) => <Link to={`/devices/${encodeURIComponent(id)}`}>{id}</Link>,
            },
            { title: "Status", dataIndex: "status", render: (s: string) => <Tag color={STATUS_COLOR[s]}>{s}</Tag> },
            { title: "Approved", dataIndex: "approved_at", render: (t: string | null) => (t ? <RelativeTime iso={t} /> : "") },
            { title: "Revoked", dataIndex: "revoked_at", render: (t: string | null) => (t ? <RelativeTime iso={t} /> : "") },
            {
              title: "",
              key: "actions",
              align: "right",
              render: (_: unknown, c: Credential) => (
                <Space>
                  <Popconfirm
                    title={c.status === "revoked" ? `Issue new credentials to ${c.device_id}?` : `Rotate ${c.device_id}'s secret?`}
                    description="A new password is shown once; the old one stops working and the device is disconnected until it has the new one."
                    okText={c.status === "revoked" ? "Issue" : "Rotate"}
                    onConfirm={() => rotate(c.device_id)}
                  >
                    <Button size="small">{c.status === "revoked" ? "Issue new" : "Rotate"}</Button>
                  </Popconfirm>
                  {c.status !== "revoked" && (
                    <Popconfirm
                      title={`Revoke ${c.device_id}?`}
                      description="It is disconnected within seconds and refused from then on (also for provisioning)."
                      okText="Revoke"
                      okButtonProps={{ danger: true }}
                      onConfirm={() => act(`${c.device_id} revoked`, () => revoke(c.device_id))}
                    >
                      <Button size="small" danger>
                        Revoke
                      </Button>
                    </Popconfirm>
                  )}
                  <Popconfirm
                    title={`Forget ${c.device_id}'s credentials?`}
                    description="Its secret stops working; it may then ask for provisioning again."
                    okText="Forget"
                    okButtonProps={{ danger: true }}
                    onConfirm={() => act(`${c.device_id} forgotten`, () => forget(c.device_id))}
                  >
                    <Button size="small">Forget</Button>
                  </Popconfirm>
                </Space>
              ),
            },
          ]}
        />
      </Card>
      <IssueCredentials
        open={issuing}
        onClose={() => setIssuing(false)}
        onIssue={async (id) => {
          setIssuing(false);
          await rotate(id);
        }}
      />
      <ShownOnce
        secret={secret?.password ?? null}
        title={`MQTT password for ${secret?.device ?? ""}`}
        description={
          <>
            The device connects with client id and username <code>{secret?.device}</code> and this password. Store it in the
            device now: the platform keeps only a hash and never shows it again (rotate to get a new one).
          </>
        }
        onClose={() => setSecret(null)}
        testId="device-secret"
      />
    </div>
  );
}

function IssueCredentials({ open, onClose, onIssue }: { open: boolean; onClose: () => void; onIssue: (id: string) => void }) {
  const [form] = Form.useForm<{ device_id: string }>();
  return (
    <Modal open={open} title="Issue credentials" okText="Issue" onCancel={onClose} onOk={() => form.submit()} destroyOnHidden>
      <Form
        form={form}
        layout="vertical"
        preserve={false}
        onFinish={(v) => {
          onIssue(v.device_id.trim());
        }}
      >
        <Form.Item
          name="device_id"
          label="Device id (its MQTT client id and username)"
          rules={[{ required: true }, { pattern: DEVICE_ID, message: "letters, digits, - and _ (up to 64)" }]}
        >
          <Input placeholder="ESP32-A1B2C3" autoFocus />
        </Form.Item>
        <Typography.Text type="secondary">
          A device that already has credentials gets a new password (rotation): its old one stops working.
        </Typography.Text>
      </Form>
    </Modal>
  );
}
