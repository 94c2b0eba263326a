// The fleet secret devices provision with, and the pairing window: while it is open, a
// device that provisions is approved at once (docs/security.md#pairing).
import { useCallback, useEffect, useState } from "react";
import { Alert, Button, Card, Space, Typography } from "antd";
import { LinkOutlined } from "@ant-design/icons";
import { errorText } from "../../hooks/useList";
import { POLL_MS, closePairing, getPairing, openPairing, type Pairing } from "./service";

export const PAIRING_MINUTES = 10;

export function PairingCard() {
  const [pairing, setPairing] = useState<Pairing | null>(null);
  const [error, setError] = useState<string | null>(null);

  const load = useCallback(async (call: () => Promise<Pairing> = getPairing) => {
    try {
      setPairing(await call());
      setError(null);
    } catch (exc) {
      setError(errorText(exc));
    }
  }, []);

  useEffect(() => {
    void load();
    const timer = setInterval(() => void load(), POLL_MS);
    return () => clearInterval(timer);
  }, [load]);

  if (pairing !== null && !pairing.secure) {
    return (
      <Alert
        type="warning"
        showIcon
        style={{ marginBottom: 16 }}
        message="Open mode: devices connect without credentials"
        description="Anyone who can reach the MQTT port can act as any device. Restart without --open (IOTP_OPEN) to require credentials."
        data-testid="pairing"
      />
    );
  }
  const until = pairing?.open_until ? new Date(pairing.open_until).toLocaleTimeString() : null;
  return (
    <Card title="Adding devices" style={{ marginBottom: 16 }} loading={pairing === null && error === null} data-testid="pairing">
      {error && <Alert type="error" showIcon message={error} style={{ marginBottom: 12 }} />}
      <Space direction="vertical" style={{ width: "100%" }}>
        <div>
          Fleet secret (devices provision with it):{" "}
          {pairing?.fleet_secret ? (
            <Typography.Text code copyable data-testid="fleet-secret">
              {pairing.fleet_secret}
            </Typography.Text>
          ) : (
            <Typography.Text type="secondary">not set</Typography.Text>
          )}
        </div>
        {pairing?.auto_approve ? (
          <Typography.Text>Every provisioning request is approved at once (IOTP_AUTO_APPROVE).</Typography.Text>
        ) : pairing?.open ? (
          <Space wrap>
            <Typography.Text strong data-testid="pairing-state">
              Pairing is open until {until}: new devices are approved at once.
            </Typography.Text>
            <Button onClick={() => void load(closePairing)}>Close pairing</Button>
          </Space>
        ) : (
          <Space wrap>
            <Typography.Text data-testid="pairing-state">New devices wait below for your approval.</Typography.Text>
            <Button type="primary" icon={<LinkOutlined />} onClick={() => void load(() => openPairing(PAIRING_MINUTES))}>
              Pair devices for {PAIRING_MINUTES} minutes
            </Button>
          </Space>
        )}
      </Space>
    </Card>
  );
}
