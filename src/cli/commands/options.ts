import { Option } from 'commander';

/** `-c, --config FILE`, shared by every command that reads a configuration. */
export const configOption = (): Option => new Option('-c, --config <file>', 'configuration file (YAML)').default('syncline.yaml');
