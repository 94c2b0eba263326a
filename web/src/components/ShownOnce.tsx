// A secret the server shows only once (device password, API key): a warning, the value
// with a copy button, and an explicit "I have stored it" to close.
import { Alert, Modal, Typography } from "antd";
import type { ReactNode } from "react";

export interface ShownOnceProps {
  /** null: closed */
  secret: string | null;
  title: string;
  description: ReactNode;
  onClose: () => void;
  testId?: string;
}

export function ShownOnce({ secret, title, description, onClose, testId = "shown-once" }: ShownOnceProps) {
  return (
    <Modal
      open={secret !== null}
      destroyOnHidden
      title={title}
      onOk={onClose}
      onCancel={onClose}
      maskClosable={false}
      cancelButtonProps={{ style: { display: "none" } }}
      okText="I have stored it"
    >
      <Alert type="warning" showIcon message="Shown only now" description={description} style={{ marginBottom: 12 }} />
      <Typography.Paragraph copyable={{ text: secret ?? "", tooltips: ["Copy", "Copied"] }} data-testid={testId}>
        <code style={{ wordBreak: "break-all" }}>{secret}</code>
      </Typography.Paragraph>
    </Modal>
  );
}
