with source as (
    select * from {{ source('raw', 'marketing_spend') }}
),

deduplicated as (
    {{ deduplicate('source', 'date, channel, campaign_id', '_loaded_at desc, _source_file desc, _source_line desc') }}
)

select
    cast(date as date) as spend_date,
    cast(channel as {{ dbt.type_string() }}) as channel,
    cast(campaign_id as {{ dbt.type_string() }}) as campaign_id,
    cast(campaign_name as {{ dbt.type_string() }}) as campaign_name,
    {{ money('spend') }} as spend,
    cast(impressions as bigint) as impressions,
    cast(clicks as bigint) as clicks,
    cast(_source_file as {{ dbt.type_string() }}) as source_file,
    cast(_source_line as integer) as source_line,
    _loaded_at
from deduplicated
