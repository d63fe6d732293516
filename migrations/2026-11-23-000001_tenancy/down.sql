DROP TABLE projects;
DROP TABLE organizations;
