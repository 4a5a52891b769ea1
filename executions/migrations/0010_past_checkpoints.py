import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("executions", "0008_schedules"),
    ]

    operations = [
        migrations.CreateModel(
            name="PastCheckpoint",
            fields=[
                ("pk_id", models.BigAutoField(primary_key=True, serialize=False)),
                ("checkpoint_id", models.CharField(max_length=40)),
                ("seq", models.PositiveIntegerField()),
                ("data", models.JSONField()),
                ("created_at", models.DateTimeField()),
                (
                    "execution",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="past_checkpoints",
                        to="executions.execution",
                    ),
                ),
            ],
            options={
                "ordering": ["execution", "seq", "pk_id"],
                "indexes": [models.Index(fields=["execution", "seq"], name="past_checkpoint_by_seq")],
            },
        ),
    ]
